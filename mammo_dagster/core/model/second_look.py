"""Train the second look: the patch network that decides the biopsy flag (the `train` extra).

The patch network learns from image labels alone (multiple-instance learning: an image
has a marker when its highest-scoring patch shows one), on the patches that rendering
contract v3 stores in every thumbnail (`core.imaging.lift`). It is small, so it can afford what
the image network can't: K-fold training over the train and validation patients, whose
out-of-fold scores (each image scored by a network that never saw its patient) set the
biopsy threshold on every labeled image outside the hold-out instead of a validation
split of a few dozen; then one more network on all of them, which ships. Every network
trains the same fixed schedule (no early stopping: an out-of-fold score must not have
chosen its own epoch), and is trained again from the next seed when it ranks its own
training images poorly (`MIN_FIT_AUC`): a fit now and then collapses.
"""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback  # noqa: F401  (Learner.no_bar)
from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (Learner.fit_one_cycle)
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat
from torch import nn

from ..metrics import auc
from .network import LIFT_FLOOR, PatchNet, patch_jitter
from .splits import shuffle_key

#: A patch network must rank its own training images at least this well (ROC AUC), or it
#: is trained again from the next seed, up to FIT_TRIES fits; the best ranking one is kept.
#: A healthy fit ranks them at ~1.0; a `make demo` model once shipped a network that ranked
#: them at 0.65 (and its hold-out at 0.39) while its three fold networks were fine.
MIN_FIT_AUC, FIT_TRIES = 0.9, 3


@dataclass
class PatchConfig:
    epochs: int = 24
    batch_size: int = 32
    lr: float = 3e-3
    folds: int = 3  # out-of-fold thresholds; 0 or 1: no folds (thresholds on validation)
    jitter: float = 1.0
    raise_window: float = 0.25  # share of patches whose window channel is raised
    zoom: float = 0.0  # half the patches magnified up to 1 + zoom (`network.patch_zoom`)
    lift_floor: float = LIFT_FLOOR  # see `network.PatchNet` (0: the lift channel as stored)
    seed: int = 0


class MIL(nn.Module):
    """The image's biopsy logit: its highest patch logit."""

    def __init__(self, patch_net: nn.Module) -> None:
        super().__init__()
        self.patch_net = patch_net

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return torch.amax(self.patch_net(patches), dim=1)


class PatchInput(Callback):
    """uint8 patches -> 0..1, jittered on training batches (`network.patch_jitter`)."""

    order = 5

    def __init__(self, strength: float, raise_window: float = 0.25, zoom: float = 0.0) -> None:
        self.strength, self.raise_window, self.zoom = strength, raise_window, zoom

    def before_batch(self) -> None:
        x = self.xb[0].float() / 255.0
        if self.training:
            x = patch_jitter(x, self.strength, self.raise_window, self.zoom)
        self.learn.xb = (x,)


def _dataset(patches: np.ndarray, y: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.from_numpy(p), torch.tensor(float(v))) for p, v in zip(patches, y, strict=True)]


def fit_patch_net(
    patches: np.ndarray, y: np.ndarray, valid: np.ndarray | None, config: PatchConfig
) -> PatchNet:
    """A patch network trained on uint8 `patches` [n, K, C, P, P] with biopsy labels `y`
    (`valid`: indices reported as fastai's validation set, never used for choices)."""
    torch.manual_seed(config.seed)
    random.seed(config.seed)  # fastai's loaders draw their shuffling from Python's generator
    idx = np.arange(len(y))
    shown = idx[valid] if valid is not None and len(valid) else idx[: max(1, len(idx) // 5)]
    dls = DataLoaders.from_dsets(
        _dataset(patches, y), _dataset(patches[shown], y[shown]),
        bs=min(config.batch_size, len(y)), num_workers=0,
    )  # fmt: skip
    net = PatchNet(lift_floor=config.lift_floor)
    learn = Learner(
        dls,
        MIL(net),
        loss_func=BCEWithLogitsLossFlat(),
        cbs=[PatchInput(config.jitter, config.raise_window, config.zoom)],
    )
    with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(io.StringIO()):
        learn.fit_one_cycle(config.epochs, config.lr, wd=1e-4)
    return net.eval()


def patch_probs(net: PatchNet, patches: np.ndarray, batch: int = 64) -> np.ndarray:
    """The biopsy probability (highest patch) of each image's uint8 patches."""
    out = []
    mil = MIL(net).eval()
    with torch.inference_mode():
        for i in range(0, len(patches), batch):
            x = torch.from_numpy(patches[i : i + batch]).float() / 255.0
            out.append(torch.sigmoid(mil(x)).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def fit_auc(net: PatchNet, patches: np.ndarray, y: np.ndarray) -> float | None:
    """How well `net` ranks the images it was trained on; None with one class only."""
    return auc(y > 0.5, patch_probs(net, patches))


def fit_checked(
    patches: np.ndarray, y: np.ndarray, valid: np.ndarray | None, config: PatchConfig
) -> tuple[PatchNet, list[float]]:
    """`fit_patch_net`, fitted again from seeds config.seed + 1, + 2 ... while the network
    ranks its own training images below MIN_FIT_AUC (FIT_TRIES fits at most; the best is
    kept). Returns the network and each fit's AUC (empty with one class only)."""
    best: tuple[float, PatchNet] | None = None
    aucs: list[float] = []
    for i in range(FIT_TRIES):
        net = fit_patch_net(patches, y, valid, replace(config, seed=config.seed + i))
        score = fit_auc(net, patches, y)
        if score is None:
            return net, aucs
        aucs.append(score)
        if best is None or score > best[0]:
            best = (score, net)
        if score >= MIN_FIT_AUC:
            break
    assert best is not None
    return best[1], aucs


def _fits_said(aucs: list[float]) -> str:
    """What a progress line adds when a network needed more than one fit."""
    if len(aucs) < 2:
        return ""
    tries = ", ".join(f"{a:.2f}" for a in aucs)
    kept = "" if max(aucs) >= MIN_FIT_AUC else f"; none reached {MIN_FIT_AUC}, the best kept"
    return f"; {len(aucs)} fits, ranking their own training images at AUC {tries}{kept}"


def folds_of(patients: list[str], k: int, seed: int = 0) -> np.ndarray:
    """Each image's fold (0..k-1), by patient: a patient's images share one."""
    order = sorted(set(patients), key=lambda p: shuffle_key(p, f"folds-{seed}"))
    fold = {p: i % k for i, p in enumerate(order)}
    return np.array([fold[p] for p in patients])


@dataclass
class SecondLook:
    """The shipped patch network and the out-of-fold scores behind its threshold."""

    net: PatchNet
    oof: np.ndarray | None  # out-of-fold biopsy probabilities (None without folds)
    folds: int
    seconds: float
    #: each network's fits (fold 1..k, then "shipped"): how well each ranked its own
    #: training images (ROC AUC); more than one where a fit fell below MIN_FIT_AUC
    fits: dict[str, list[float]] = field(default_factory=dict)


def train_second_look(
    patches: np.ndarray,
    y: np.ndarray,
    patients: list[str],
    valid: np.ndarray,
    config: PatchConfig,
    progress: Callable[[str], None] | None = None,
) -> SecondLook:
    """K fold networks for out-of-fold scores (when `config.folds` >= 2 and every fold
    holds both classes), then the shipped network on all of `patches`."""
    import time

    t0 = time.perf_counter()
    oof = None
    fits: dict[str, list[float]] = {}
    k = config.folds if config.folds >= 2 else 0
    fold = folds_of(patients, k, config.seed) if k else None
    if fold is not None and all(len(set(y[fold != f])) == 2 for f in range(k)):
        oof = np.zeros(len(y), np.float32)
        for f in range(k):
            train = np.flatnonzero(fold != f)
            net, fits[f"fold {f + 1}"] = fit_checked(patches[train], y[train], None, config)
            oof[fold == f] = patch_probs(net, patches[fold == f])
            if progress:
                progress(f"second look: fold network {f + 1}/{k} trained "
                         f"({time.perf_counter() - t0:.0f} s so far"
                         f"{_fits_said(fits[f'fold {f + 1}'])})")  # fmt: skip
    else:
        k = 0
    net, fits["shipped"] = fit_checked(patches, y, valid, config)
    if progress:
        progress(f"second look: the network that ships trained ({time.perf_counter() - t0:.0f} s"
                 f"{_fits_said(fits['shipped'])})")  # fmt: skip
    return SecondLook(net, oof, k, time.perf_counter() - t0, fits)
