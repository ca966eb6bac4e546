"""What one file may cost: frames, pixel memory and decode time, checked before any work.

A header can claim anything (NumberOfFrames 99,999,999; 65535 x 65535 pixels in a
96 KB file), so every claim is checked against these limits before a byte is
allocated or a frame attempted; a decode that still runs too long is killed by the
worker pool (`core.imaging.guard`). Each limit is configurable through the environment, read
when the check runs (worker processes inherit it):

- ``MAMMO_MAX_FRAMES`` (default 100): frames per file. A 2-D mammogram has one;
  tomosynthesis volumes are refused anyway.
- ``MAMMO_MAX_FRAME_MB`` (default 256): Rows x Columns x bytes per sample of one frame,
  in MiB. The largest detectors (~4100 x 5400 at 16 bits) need ~44 MiB.
- ``MAMMO_DECODE_TIMEOUT_S`` (default 120): seconds one file may take in a worker
  before it is killed and recorded as ``timeout``. A full-size JPEG 2000 takes ~1 s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV_MAX_FRAMES = "MAMMO_MAX_FRAMES"
ENV_MAX_FRAME_MB = "MAMMO_MAX_FRAME_MB"
ENV_TIMEOUT = "MAMMO_DECODE_TIMEOUT_S"
DEFAULT_MAX_FRAMES = 100
DEFAULT_MAX_FRAME_MB = 256
DEFAULT_TIMEOUT_S = 120.0


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"${name} must be above 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """The limits one file is held to (see the module docstring for the defaults)."""

    max_frames: int = DEFAULT_MAX_FRAMES
    max_frame_mb: float = DEFAULT_MAX_FRAME_MB
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_frames=int(_env_number(ENV_MAX_FRAMES, DEFAULT_MAX_FRAMES)),
            max_frame_mb=_env_number(ENV_MAX_FRAME_MB, DEFAULT_MAX_FRAME_MB),
            timeout_s=_env_number(ENV_TIMEOUT, DEFAULT_TIMEOUT_S),
        )

    @property
    def max_frame_bytes(self) -> int:
        return int(self.max_frame_mb * 2**20)
