"""ImageNet ResNet18 weights brought in offline (the `train` extra).

Training uses torchvision's ImageNet weights when they sit in torch's hub cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch``); nothing is downloaded
at run time. `import_weights` checks that a file really holds a ResNet18 state dict of
ImageNet's shape (1000 classes) and copies it under the file name torchvision looks for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: The file name torchvision's ResNet18_Weights.IMAGENET1K_V1 is cached under.
CACHE_NAME = "resnet18-f37072fd.pth"


def cache_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached() -> Path | None:
    """The cached ImageNet ResNet18 weights file, if any."""
    found = sorted(cache_dir().glob("resnet18-*.pth")) if cache_dir().is_dir() else []
    return found[0] if found else None


def import_weights(path: Path) -> Path:
    """Check `path` and copy it into the cache; returns where it went. ValueError (one
    line) when the file is not ResNet18 ImageNet weights."""
    import torch
    from torchvision.models import resnet18

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a PyTorch weights file ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    expected = resnet18(weights=None).state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or wrong:
        what = f"missing {missing[:3]}" if missing else f"other shapes for {wrong[:3]}"
        raise ValueError(f"{path} is not a torchvision ResNet18 with 1000 classes ({what})")
    dest = cache_dir() / CACHE_NAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(path, tmp)
    tmp.replace(dest)
    return dest
