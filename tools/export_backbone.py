#!/usr/bin/python3
"""Exports torchvision (or timm) backbone weights, classifier head included, into the file the
ProtoQuant backbones load (`[backbone] weights = ...`): torch.save of a plain dict of tensors under
torchvision's state_dict names. (LibTorch 1.13 cannot read the OrderedDict that
`model.state_dict()` returns, so a torchvision .pth needs this conversion: --from FILE.)

Examples (the first two download ImageNet weights, so they need internet):
  /usr/bin/python3 tools/export_backbone.py --arch resnet50 --weights DEFAULT --out resnet50.pth
  /usr/bin/python3 tools/export_backbone.py --arch convnext_tiny --weights DEFAULT --out convnext_tiny.pth
  /usr/bin/python3 tools/export_backbone.py --arch resnet50 --from resnet50-11ad3fa6.pth --out resnet50.pth
  /usr/bin/python3 tools/export_backbone.py --arch resnet18 --weights random --seed 1 --out r18-random.pth

`--weights random` builds random weights for parity tests: torchvision's random initialisation,
then random BatchNorm statistics and affine parameters and random ConvNeXt layer scales, so that
eval-mode BatchNorm and every residual branch do real work.

Every export is checked by loading it into torchvision's model of that architecture (strict).
"""
import argparse
import re
import sys

import torch
import torchvision

ARCHS = ("resnet18", "resnet34", "resnet50", "convnext_tiny")


def randomize(model, seed):
    """Non-trivial statistics and scales, so parity covers eval-mode BN and every residual branch."""
    generator = torch.Generator().manual_seed(seed + 1)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(uniform(n, 0.5, 2.0))
                module.weight.copy_(uniform(n, 0.5, 1.5))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        for name, parameter in model.named_parameters():
            if name.endswith("layer_scale"):  # 1e-6 at init would hide each block's branch
                parameter.copy_(uniform(parameter.shape, 0.1, 0.5))


def timm_to_torchvision(arch, state):
    """timm's key names -> torchvision's. timm's ResNets already use torchvision's names."""
    if arch.startswith("resnet"):
        return dict(state)
    # ConvNeXt. Not tested here (no timm in this environment): the strict load below checks it.
    rules = [
        (r"^stem\.0\.", "features.0.0."),
        (r"^stem\.1\.", "features.0.1."),
        (r"^head\.norm\.", "classifier.0."),
        (r"^head\.fc\.", "classifier.2."),
    ]
    out = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in rules:
            new = re.sub(pattern, replacement, new)
        m = re.match(r"^stages\.(\d+)\.downsample\.(\d+)\.(.*)$", new)
        if m:
            new = f"features.{2 * int(m.group(1))}.{m.group(2)}.{m.group(3)}"
        m = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.(.*)$", new)
        if m:
            stage, block, rest = int(m.group(1)), m.group(2), m.group(3)
            parts = {"conv_dw.": "block.0.", "norm.": "block.2.", "mlp.fc1.": "block.3.", "mlp.fc2.": "block.5."}
            for prefix, replacement in parts.items():
                if rest.startswith(prefix):
                    rest = replacement + rest[len(prefix):]
            if rest == "gamma":
                rest, value = "layer_scale", value.reshape(-1, 1, 1)
            new = f"features.{2 * stage + 1}.{block}.{rest}"
        out[new] = value
    return out


def unwrap(checkpoint):
    """A state dict, possibly inside a training checkpoint ({"model": ...} or {"state_dict": ...})."""
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(checkpoint, dict) and key in checkpoint and isinstance(checkpoint[key], dict):
            checkpoint = checkpoint[key]
    state = {re.sub(r"^module\.", "", k): v for k, v in checkpoint.items()}  # DataParallel prefix
    return state


def build(args):
    """Returns (torchvision model holding the weights, where they came from)."""
    if args.from_file:
        state = unwrap(torch.load(args.from_file, map_location="cpu"))
        if any(k.startswith(("stem.", "stages.", "head.")) for k in state):
            state = timm_to_torchvision(args.arch, state)
        source = args.from_file
    elif args.timm:
        import timm  # optional: only for --timm

        state = timm_to_torchvision(args.arch, timm.create_model(args.timm, pretrained=True).state_dict())
        source = f"timm {args.timm}"
    else:
        if args.weights == "random":
            torch.manual_seed(args.seed)
            model = getattr(torchvision.models, args.arch)(weights=None, num_classes=args.num_classes)
            randomize(model, args.seed)
            return model, f"random (seed {args.seed})"
        model = getattr(torchvision.models, args.arch)(weights=args.weights)
        return model, f"torchvision {args.arch} weights={args.weights}"
    head = "fc.weight" if args.arch.startswith("resnet") else "classifier.2.weight"
    if head not in state:
        sys.exit(f"{source}: no '{head}' key: is this a {args.arch} checkpoint?")
    model = getattr(torchvision.models, args.arch)(weights=None, num_classes=state[head].shape[0])
    model.load_state_dict(state, strict=True)  # every name and shape checked by torchvision itself
    return model, source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument("--weights", default="DEFAULT",
                        help="torchvision weights enum name (DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2) or random")
    parser.add_argument("--timm", help="a timm model name to take pretrained weights from instead (needs timm)")
    parser.add_argument("--from", dest="from_file", help="convert this state_dict file (torchvision or timm names)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classes of the random head (--weights random)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --weights random")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    model, source = build(args)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, args.out)  # a plain dict: what LibTorch's pickle_load reads
    head = state["fc.weight" if args.arch.startswith("resnet") else "classifier.2.weight"]
    print(f"{args.out}: {args.arch} from {source}: {len(state)} tensors, "
          f"{sum(v.numel() for v in model.parameters())} parameters, head {head.shape[0]} classes")


if __name__ == "__main__":
    main()
