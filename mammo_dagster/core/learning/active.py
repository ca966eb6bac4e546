"""Active learning: which unlabeled images to label next.

Scoring and selection are apart (as in MONAI Label): a *score* says how unsure
the current model is about an image; a *strategy* picks the queue from scored
candidates. A new strategy is one small class with a `select` method.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Candidate:
    sop_instance_uid: str
    frame: int
    study_instance_uid: str
    manufacturer: str
    score: float  # uncertainty: higher = label sooner


@dataclass(frozen=True)
class Pick:
    candidate: Candidate
    reason: str  # uncertain | explore | random


def uncertainty(probs: np.ndarray, combine: str = "mean") -> np.ndarray:
    """Binary entropy over both flags, in bits (0 = sure, 1 = a coin toss), combined by
    `mean` or `max` (an image the model is unsure of for either flag)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    entropy = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    if combine not in ("mean", "max"):
        raise ValueError(f"combine must be 'mean' or 'max', got {combine!r}")
    return entropy.max(axis=1) if combine == "max" else entropy.mean(axis=1)


class Strategy(Protocol):
    name: str

    def select(self, candidates: list[Candidate], n: int, seed: int) -> list[Pick]: ...


class RandomStrategy:
    """Uniformly at random (the baseline active learning has to beat)."""

    name = "random"

    def select(self, candidates: list[Candidate], n: int, seed: int) -> list[Pick]:
        chosen = random.Random(seed).sample(candidates, min(n, len(candidates)))
        return [Pick(c, "random") for c in chosen]


class UncertaintyStrategy:
    """The most uncertain images, spread across studies and vendors, plus a share of
    random ones (exploration: the model's blind spots are not all uncertain)."""

    name = "uncertainty"

    def __init__(self, explore: float = 0.2, per_study: int = 2) -> None:
        self.explore, self.per_study = explore, per_study

    def select(self, candidates: list[Candidate], n: int, seed: int) -> list[Pick]:
        n = min(n, len(candidates))
        n_explore = round(n * self.explore)
        ranked = sorted(candidates, key=lambda c: (-c.score, c.sop_instance_uid, c.frame))
        chosen = _diverse(ranked, n - n_explore, self.per_study)
        if len(chosen) < n - n_explore:  # every study capped: the rest by score
            taken = set(map(id, chosen))
            chosen += [c for c in ranked if id(c) not in taken][: n - n_explore - len(chosen)]
        taken = set(map(id, chosen))
        pool = [c for c in candidates if id(c) not in taken]
        explore = random.Random(seed).sample(pool, min(n - len(chosen), len(pool)))
        # exploration interleaved, so that the labeler sees both kinds early
        out: list[Pick] = []
        every = max(1, round(len(chosen) / len(explore))) if explore else 0
        for i, c in enumerate(chosen, start=1):
            out.append(Pick(c, "uncertain"))
            if explore and i % every == 0:
                out.append(Pick(explore.pop(), "explore"))
        return out + [Pick(c, "explore") for c in explore]


def _diverse(ranked: list[Candidate], k: int, per_study: int) -> list[Candidate]:
    """Up to `k` candidates in score order, vendors taking turns, <= `per_study` a study."""
    queues = {v: deque(c for c in ranked if c.manufacturer == v) for v in
              dict.fromkeys(c.manufacturer for c in ranked)}  # fmt: skip
    counts: dict[str, int] = defaultdict(int)
    picks: list[Candidate] = []
    while len(picks) < k:
        progressed = False
        for queue in queues.values():
            while queue:
                c = queue.popleft()
                if counts[c.study_instance_uid] < per_study:
                    counts[c.study_instance_uid] += 1
                    picks.append(c)
                    progressed = True
                    break
            if len(picks) >= k:
                break
        if not progressed:
            break
    return picks


STRATEGIES: dict[str, type] = {"uncertainty": UncertaintyStrategy, "random": RandomStrategy}


def strategy(name: str, **kwargs) -> Strategy:
    """The strategy called `name`; `kwargs` configure `uncertainty` (others take none)."""
    try:
        return STRATEGIES[name](**kwargs) if name == "uncertainty" else STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, got {name!r}") from None
