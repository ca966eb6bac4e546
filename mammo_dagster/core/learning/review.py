"""Review mode: which of the current model's answers a person should check first.

Scoring and selection are apart, as in `active` (MONAI Label's split): a *score* says
how close a prediction is to a decision threshold (`margin`, in logits) and why it is
worth a look (`reason`); a *strategy* orders the reviewable images. A new order is one
small class with an `order` method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..imaging.preprocess import FLAGS
from ..metrics import logit
from ..model.splits import shuffle_key

#: An unflagged image within this many logits of a threshold is borderline.
BORDERLINE_LOGITS = 1.5


def margin(probs: Sequence[float], thresholds: dict[str, float]) -> float:
    """Logits between the probability closest to its flag's threshold and that threshold."""
    return min(
        abs(logit(p) - logit(thresholds.get(f, 0.5))) for f, p in zip(FLAGS, probs, strict=True)
    )


def reason(flags: Sequence[bool], margin: float) -> str:
    """Why review it: `flagged` (a flag raised), `borderline` (close to raising one), or
    `unflagged` (a random check of what the model let pass)."""
    if any(flags):
        return "flagged"
    return "borderline" if margin < BORDERLINE_LOGITS else "unflagged"


@dataclass(frozen=True)
class Reviewable:
    image_id: str
    margin: float
    reason: str


class ReviewStrategy(Protocol):
    name: str

    def order(self, items: list[Reviewable], seed: str) -> list[str]: ...


class BorderlineFirst:
    """Flagged and borderline images, closest to a threshold first, with a share of
    unflagged images mixed in as random checks (at least ten, when there are ten)."""

    name = "borderline-first"

    def __init__(self, random_share: float = 0.1) -> None:
        self.random_share = min(max(random_share, 0.0), 0.9)

    def order(self, items: list[Reviewable], seed: str) -> list[str]:
        ranked = sorted(
            (i.margin, shuffle_key(i.image_id, seed), i.image_id)
            for i in items
            if i.reason != "unflagged"
        )
        unflagged = sorted(
            (i.image_id for i in items if i.reason == "unflagged"),
            key=lambda image_id: shuffle_key(image_id, seed),
        )
        share = self.random_share
        checks = max(math.ceil(share / (1 - share) * len(ranked)), min(10, len(unflagged)))
        checks = min(checks, len(unflagged)) if share > 0 else 0
        order: list[str] = []
        used = 0
        for _, _, image_id in ranked:
            order.append(image_id)
            if used < checks and used + 1 <= share * (len(order) + 1):
                order.append(unflagged[used])
                used += 1
        return order + unflagged[used:checks]
