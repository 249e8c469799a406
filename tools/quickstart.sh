#!/usr/bin/env bash
# README command 1: install the dependencies, build, and run the quickstart experiment
# (ProtoQuant on Fashion-MNIST) end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
build/bin/protoquant run experiments/quickstart.toml "$@"
