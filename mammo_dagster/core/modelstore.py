"""The versioned model store: ``$MAMMO_HOME/models/<version>/`` and a ``current.json`` pointer.

The pointer names the model in use and the label watermark it was trained on; it
moves atomically (temp + rename), and only after a model's checks pass.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

CURRENT = "current.json"


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
    models.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".current.", suffix=".tmp", dir=models)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(current), f)
        os.replace(tmp, models / CURRENT)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
