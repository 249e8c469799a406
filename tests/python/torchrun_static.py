"""Launches a command as torchrun does by default: a static rendezvous whose agent serves the
TCPStore on the master port (TORCHELASTIC_USE_AGENT_STORE=True for the workers).

    python3 torchrun_static.py NPROC PORT COMMAND [ARGS...]

torchrun itself is not called: Debian's torch 1.13 under Python 3.11 cannot parse its --redirects
and --tee defaults (Std.from_str returns None), so its launcher API is given them directly.
"""
import sys
import uuid

from torch.distributed.elastic.multiprocessing import Std
from torch.distributed.launcher.api import LaunchConfig, elastic_launch


def main():
    nproc, port, command, args = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="static", rdzv_endpoint=f"127.0.0.1:{port}",
                          rdzv_configs={"rank": 0, "timeout": 60}, max_restarts=0, monitor_interval=1,
                          redirects=Std.NONE, tee=Std.NONE, start_method="spawn")
    elastic_launch(config, command)(*args)


if __name__ == "__main__":
    main()
