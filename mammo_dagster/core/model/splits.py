"""Which split a patient belongs to: train, valid or the locked hold-out.

Decided by patient (never by image: a patient's images are alike, so splitting
them leaks), deterministic and stable as archives grow: a patient's split is a
salted hash of its patient key alone, so adding patients never moves anyone.
The labeler uses :func:`split_of` to send a share of labels to the hold-out; the
training set uses it to keep the hold-out out of training. Nobody else decides.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "valid", "holdout"]

#: Share of patients in the locked hold-out (evaluated, never trained on).
HOLDOUT_FRACTION = 0.15
#: Share of the other patients used for validation (thresholds, early stopping).
VALID_FRACTION = 0.2
_SALT = b"mammo-dagster split v1"


def _unit(key: str, purpose: bytes) -> float:
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=_SALT, person=purpose).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(patient_key: str | None, study_uid: str | None = None) -> Split:
    """The patient's split (a file without a patient ID is split by its study)."""
    key = patient_key or f"study:{study_uid}"
    if _unit(key, b"holdout") < HOLDOUT_FRACTION:
        return "holdout"
    return "valid" if _unit(key, b"valid") < VALID_FRACTION else "train"


def shuffle_key(image_id: str, seed: str = "") -> str:
    """A deterministic sort key that scatters images (and so studies) uniformly."""
    return hashlib.blake2b(f"{seed}|{image_id}".encode(), digest_size=8).hexdigest()
