#!/usr/bin/python3
"""Writes the reference data of tests/test_backbone*.cc into OUT_DIR (run by the tests, once per
build tree). Everything expected is computed here by torchvision / TorchScript, independently of
the C++ code under test:
  <arch>.pth            random weights, exported by tools/export_backbone.py (--weights random)
  <arch>_reference.pt   {"input", "features", "logits"} of torchvision's model in eval mode
  resnet34_parameters.txt  torchvision's parameter count of resnet34 with 10 classes
  bad_*.pth             resnet18 exports broken in one way each (missing/unexpected key, shape,
                        an OrderedDict as model.state_dict() returns, the legacy non-zip format, a convnext)
  vit_*.pt, cnn_tuple.pt, head.pt  tiny scripted modules; their *_reference.pt hold the expected grid
"""
import collections
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import export_backbone  # noqa: E402

CLASSES = 10


def torchvision_features(arch, model, x):
    if arch.startswith("resnet"):
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            x = getattr(model, name)(x)
        return x
    return model.features(x)


def parity(out, arch, seed):
    path = os.path.join(out, f"{arch}.pth")
    export_backbone.main(["--arch", arch, "--weights", "random", "--seed", str(seed),
                          "--num-classes", str(CLASSES), "--out", path])
    model = getattr(torchvision.models, arch)(weights=None, num_classes=CLASSES)
    model.load_state_dict(torch.load(path))
    model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed + 100))
    with torch.no_grad():
        features = torchvision_features(arch, model, x)
        logits = model(x)
    torch.save({"input": x, "features": features.contiguous(), "logits": logits}, os.path.join(out, f"{arch}_reference.pt"))


def light(state):
    """The same names and shapes, stored as one expanded zero each: a few KB instead of 45 MB."""
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in state.items()}


def broken_files(out):
    state = light(torch.load(os.path.join(out, "resnet18.pth")))
    missing = dict(state)
    del missing["layer2.1.bn2.running_var"]
    torch.save(missing, os.path.join(out, "bad_missing.pth"))
    torch.save(dict(state, **{"layer5.0.conv1.weight": torch.zeros(3)}), os.path.join(out, "bad_unexpected.pth"))
    torch.save(dict(state, **{"layer3.0.conv2.weight": torch.zeros(256, 256, 1, 1)}), os.path.join(out, "bad_shape.pth"))
    torch.save(collections.OrderedDict(state), os.path.join(out, "bad_ordereddict.pth"))
    torch.save({"fc.bias": state["fc.bias"]}, os.path.join(out, "bad_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(light(torch.load(os.path.join(out, "convnext_tiny.pth"))), os.path.join(out, "bad_convnext.pth"))


class TinyVit(torch.nn.Module):
    """4x4 patches of 8 channels, then a per-token linear map; optional CLS token in front."""

    def __init__(self, cls: bool):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.mix = torch.nn.Linear(8, 8)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 8))
        self.use_cls = cls

    def grid(self, x):  # the expected feature map, computed on the grid (no token reshaping)
        return self.mix(self.embed(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def tokens(self, x):
        tokens = self.mix(self.embed(x).flatten(2).transpose(1, 2))
        if self.use_cls:
            tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        return tokens

    def forward(self, x):
        return self.tokens(x)


class DictVit(TinyVit):
    def forward(self, x):
        tokens = self.tokens(x)
        return {"pooled": tokens.mean(1), "tokens": tokens}


class TupleCnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)

    def forward(self, x):
        fmap = torch.relu(self.conv(x))
        return fmap.mean((2, 3)), fmap


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, CLASSES)

    def forward(self, z):
        return self.fc(z.amax(dim=(2, 3)))


def scripted(out):
    torch.manual_seed(5)
    square = torch.randn(2, 3, 16, 16)
    wide = torch.randn(2, 3, 16, 32)
    with torch.no_grad():
        for name, module, x in (("vit_cls", DictVit(True), square), ("vit_nocls", TinyVit(False), square),
                                ("vit_wide", TinyVit(True), wide)):
            torch.jit.save(torch.jit.script(module.eval()), os.path.join(out, f"{name}.pt"))
            torch.save({"input": x, "features": module.grid(x).contiguous()}, os.path.join(out, f"{name}_reference.pt"))
        cnn, head = TupleCnn().eval(), Head().eval()
        torch.jit.save(torch.jit.script(cnn), os.path.join(out, "cnn_tuple.pt"))
        torch.jit.save(torch.jit.script(head), os.path.join(out, "head.pt"))
        fmap = cnn(square)[1]
        torch.save({"input": square, "features": fmap.contiguous(), "logits": head(fmap)},
                   os.path.join(out, "cnn_tuple_reference.pt"))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for seed, arch in enumerate(("resnet18", "resnet50", "convnext_tiny")):
        parity(out, arch, seed)
    resnet34 = torchvision.models.resnet34(weights=None, num_classes=CLASSES)
    with open(os.path.join(out, "resnet34_parameters.txt"), "w") as f:
        f.write(str(sum(p.numel() for p in resnet34.parameters())))
    broken_files(out)
    scripted(out)


if __name__ == "__main__":
    main()
