"""Checks a ProtoQuant model export (model/protoquant.pt) from plain Python.

usage: check_export.py EXPORT.pt CASE.pt
CASE.pt (written by the C++ test with torch::pickle_save) holds feature maps "features" and the
C++ head's eval-mode "logits" for them. The head is recomputed here from METHOD.md stage 3 and
the exported tensors alone, and must agree.
"""
import json
import sys

import torch
import torch.nn.functional as F

# --- the README's example, verbatim ---
m = torch.load(sys.argv[1])
W, E = m["head.class_weights"], m["head.prototypes"]  # C x P, P x D
tau = json.loads(m["config"])["head"]["temperature"]
print(W.shape, E.shape, tau)
# ---

case = torch.load(sys.argv[2])
z = case["features"]  # B x D x H x W
s = torch.einsum("bdhw,pd->bphw", F.normalize(z, dim=1, eps=1e-6), F.normalize(E, dim=1, eps=1e-6))
logits = torch.softmax(s / tau, dim=1).amax(dim=(2, 3)) @ W.T
error = (logits - case["logits"]).abs().max().item()
print(f"max abs difference {error:.3g}")
sys.exit(0 if error <= 1e-4 * max(1.0, case["logits"].abs().max().item()) else 1)
