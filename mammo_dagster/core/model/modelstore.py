"""The versioned model store: ``$MAMMO_HOME/models/<version>/``, each version's model card,
and a ``current.json`` pointer.

The pointer names the model in use and the label watermark it was trained on; it
moves atomically (temp + rename), and only after a model's checks pass. The card
(`ModelCard`, ``card.json``) is read and written here and nowhere else.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import atomic_write

CURRENT = "current.json"
CARD = "card.json"  #: the model card beside a version's weights
_VERSION = re.compile(r"m\d{4,}")  #: m0001, m0002, ... (more digits after m9999)


@dataclass
class ModelCard:
    """A model version's card. What the pipeline, the labeler and the CLI read back is
    typed; what training reports beside it (metrics, history, config, ...) stays in
    `report` and is written out as it came."""

    input_size: int  #: the model's input side, px
    thresholds: dict[str, float]  #: per flag: flagged at or above
    label_seq: int = 0  #: the newest label event the training set saw
    label_count: int = 0  #: current labels in that training set
    version: str | None = None
    preprocessing: dict = field(default_factory=dict)  #: the preprocessing contract
    report: dict = field(default_factory=dict)

    _TYPED = ("input_size", "thresholds", "label_seq", "label_count", "version", "preprocessing")

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        """A card from its JSON form (KeyError without an input size)."""
        rest = {k: v for k, v in d.items() if k not in cls._TYPED}
        return cls(
            input_size=int(d["input_size"]),
            thresholds={str(f): float(t) for f, t in (d.get("thresholds") or {}).items()},
            label_seq=int(d.get("label_seq") or 0),
            label_count=int(d.get("label_count") or 0),
            version=d.get("version"),
            preprocessing=dict(d.get("preprocessing") or {}),
            report=rest,
        )

    def to_dict(self) -> dict:
        typed = {k: getattr(self, k) for k in self._TYPED if getattr(self, k) is not None}
        return typed | self.report

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        """The card of the version in `folder`; OSError, ValueError or KeyError if it is
        missing or unreadable."""
        return cls.from_dict(json.loads((folder / CARD).read_text()))

    def write(self, folder: Path) -> Path:
        """Write it beside the version's weights, atomically."""
        with atomic_write(folder / CARD) as f:
            json.dump(self.to_dict(), f, indent=2)
        return folder / CARD


def has_card(folder: Path) -> bool:
    """Whether the version in `folder` finished training (its card is written last)."""
    return (folder / CARD).is_file()


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


def versions(models: Path) -> list[str]:
    """The version folders in the store, oldest first (m0001, m0002, ..., m10000)."""
    if not models.is_dir():
        return []
    found = [p.name for p in models.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda v: int(v[1:]))


def newest_trained(models: Path) -> str | None:
    """The newest version whose training finished (it has a card), None before any."""
    return next((v for v in reversed(versions(models)) if has_card(models / v)), None)


def next_version(models: Path) -> str:
    """A new version name: m0001, m0002, ... (never reused, even if a folder was removed)."""
    models.mkdir(parents=True, exist_ok=True)
    taken = [int(v[1:]) for v in versions(models)]
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
