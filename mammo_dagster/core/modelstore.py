"""The versioned model store: ``$MAMMO_HOME/models/<version>/`` and a ``current.json`` pointer.

The pointer names the model in use and the label watermark it was trained on; it
moves atomically (temp + rename), and only after a model's checks pass.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import atomic_write

CURRENT = "current.json"
CARD = "card.json"  #: the model card beside a version's weights


@dataclass(frozen=True)
class CurrentModel:
    version: str
    label_seq: int  # the newest label event the training set saw
    label_count: int  # current labels in that training set


def read_current(models: Path) -> CurrentModel | None:
    """The model in use, or None before the first one (or if the pointer is unreadable)."""
    try:
        d = json.loads((models / CURRENT).read_text())
        return CurrentModel(str(d["version"]), int(d["label_seq"]), int(d["label_count"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_current(models: Path, current: CurrentModel) -> None:
    """Point at another model: atomic, so readers see the old pointer or the new one."""
    with atomic_write(models / CURRENT) as f:
        json.dump(asdict(current), f)


def next_version(models: Path) -> str:
    """A new version name: m0001, m0002, ... (never reused, even if a folder was removed)."""
    models.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[1:]) for p in models.glob("m[0-9][0-9][0-9][0-9]*") if p.name[1:].isdigit()]
    version = f"m{max(taken, default=0) + 1:04d}"
    (models / version).mkdir()
    return version


def model_dir(models: Path, version: str) -> Path:
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"bad model version {version!r}")
    return models / version


def current_model_file(models: Path, *, int8: bool = True) -> tuple[CurrentModel, Path]:
    """The model in use and its ONNX file (int8 when it exists and `int8`), or
    FileNotFoundError with what to do about it."""
    current = read_current(models)
    if current is None:
        raise FileNotFoundError(
            f"no current model in {models}: train one (Dagster: materialize onnx_model), "
            "or pass --model PATH"
        )
    folder = model_dir(models, current.version)
    for name in (("model.int8.onnx",) if int8 else ()) + ("model.onnx",):
        if (folder / name).exists():
            return current, folder / name
    raise FileNotFoundError(f"model {current.version} has no ONNX file in {folder}")


def read_card(folder: Path) -> dict:
    """A model version's card (thresholds, input size, metrics); OSError/ValueError if
    it is missing or unreadable."""
    return json.loads((folder / CARD).read_text())
