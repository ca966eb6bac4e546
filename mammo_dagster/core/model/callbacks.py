"""What a training run does besides fitting: input jitter, a per-epoch record (and progress
line), the best epoch kept and early stopping after a warm-up, bfloat16 autocast on CPUs
that have it, and the loss over the flags being learned."""

from __future__ import annotations

from collections.abc import Callable

import torch
from fastai.callback.core import Callback
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
from torch import nn
from torch.nn import functional as F

from ..imaging import preprocess
from .network import headroom_jitter


class InputJitter(Callback):
    """On training batches, jitters the headroom of the (normalized) images
    (`network.headroom_jitter`)."""

    order = 5

    def __init__(self, strength: float) -> None:
        self.strength = strength

    def before_batch(self) -> None:
        if self.training and self.strength > 0:
            x = self.xb[0] * preprocess.STD + preprocess.MEAN
            x = (headroom_jitter(x, self.strength) - preprocess.MEAN) / preprocess.STD
            self.learn.xb = (x, *self.xb[1:])


class Record(Callback):
    """Keeps each epoch's losses in `history`, and tells `progress` (a line per epoch)."""

    order = 55  # after the Recorder (50) fills in the epoch, before early stopping (63) ends it

    def __init__(self, history: list[dict], progress: Callable[[str], None] | None = None) -> None:
        self.history = history
        self.progress = progress

    def after_epoch(self) -> None:
        vals = self.recorder.values[-1] if self.recorder.values else []
        self.history.append(
            {
                "epoch": self.epoch,
                "train_loss": float(vals[0]) if len(vals) > 0 else None,
                "valid_loss": float(vals[1]) if len(vals) > 1 else None,
                "accuracy_multi": float(vals[2]) if len(vals) > 2 else None,
            }
        )
        if self.progress:
            h = self.history[-1]
            shown = [k for k in ("train_loss", "valid_loss") if h[k] is not None]
            losses = ", ".join(f"{k.replace('_', ' ')} {h[k]:.3f}" for k in shown)
            self.progress(f"image network: epoch {self.epoch + 1}/{self.n_epoch} ({losses})")


class _AfterWarmup:
    """A from-scratch network's BatchNorm statistics lag its weights during the first,
    high-learning-rate epochs, so validation loss swings wildly there: best-epoch saving
    and early stopping only look at epochs from `warmup` on."""

    warmup = 0

    def after_epoch(self) -> None:
        if self.epoch >= self.warmup:
            super().after_epoch()  # type: ignore[misc]


class SaveBest(_AfterWarmup, SaveModelCallback):
    def __init__(self, warmup: int, **kw) -> None:
        super().__init__(**kw)
        self.warmup = warmup


class StopEarly(_AfterWarmup, EarlyStoppingCallback):
    def __init__(self, warmup: int, **kw) -> None:
        super().__init__(**kw)
        self.warmup = warmup


class CpuBf16(Callback):
    """bfloat16 autocast on the CPU for the forward pass and the loss (as fastai's
    MixedPrecision does on a GPU); weights, gradients and the export stay float32."""

    order = 10

    def before_batch(self) -> None:
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        self.autocast.__enter__()

    def after_pred(self) -> None:
        self.learn.pred = self.pred.float()

    def after_loss(self) -> None:
        self.autocast.__exit__(None, None, None)

    after_cancel_batch = after_loss


class FlagLoss(nn.Module):
    """Binary cross-entropy over the flags in `flags` only (indices into FLAGS)."""

    def __init__(self, flags: list[int]) -> None:
        super().__init__()
        self.flags = flags

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = self.flags
        return F.binary_cross_entropy_with_logits(logits[:, k], target[:, k].float())
