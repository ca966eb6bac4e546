"""`mammo weights`: bring ImageNet ResNet18 weights in offline, or show which are cached."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CliError


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "weights",
        parents=[common],
        help="bring ImageNet ResNet18 weights in offline, or show which are cached",
        description="Training starts from ImageNet weights when torch's hub cache holds "
        "them; nothing is downloaded at run time. `import FILE` checks a torchvision "
        "resnet18 state dict (e.g. resnet18-f37072fd.pth copied from another machine) and "
        "puts it there.",
    )
    p.add_argument("action", choices=["status", "import"])
    p.add_argument("file", nargs="?", help="import: the .pth file")
    p.set_defaults(func=cmd_weights)


def cmd_weights(args: argparse.Namespace) -> int:
    try:
        from ..core.model import weights
    except ImportError as e:  # pragma: no cover - an install without torch
        raise CliError(f"needs the train extra (torch): {e}") from None
    if args.action == "import":
        if not args.file:
            raise CliError("import needs the weights file: mammo weights import FILE")
        dest = weights.import_weights(Path(args.file))
        print(f"ImageNet ResNet18 weights in {dest}: training starts from them "
              "(trained_model config pretrained: auto)")  # fmt: skip
        return 0
    found = weights.cached()
    print(f"ImageNet ResNet18 weights: {found}" if found else
          f"no ImageNet ResNet18 weights in {weights.cache_dir()}: training starts from "
          "scratch (mammo weights import FILE brings them in)")  # fmt: skip
    return 0
