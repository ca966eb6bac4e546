"""How a model is trained: `TrainConfig`, the one declaration of training's options.

Torch-free, so that the Dagster definitions build `trained_model`'s run config from it
(the fields marked `run`, with their defaults and help) without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..imaging import preprocess

#: A missed flag is worse than a false alarm: thresholds keep this share of positives.
TARGET_RECALL = 0.98

#: What the target recall counts (`TrainConfig.recall_of`).
RECALL_UNITS = ("auto", "studies", "images")

#: The patch network reads each patch's lift channel against the patch's own highest
#: lift, never less than this (0..1 of the channel: 0.5 window widths): a clip over an
#: implant, which can rise only as far as the room left (contract v4, ~0.5 window widths),
#: then shows its shape as plainly as one over fat. 0: the channel as stored (before).
LIFT_FLOOR = 0.25


def option(default: Any, help: str, *, run: bool = False) -> Any:
    """A TrainConfig field with its help; `run`: a pipeline run may set it."""
    return field(default=default, metadata={"help": help, "run": run})


@dataclass
class TrainConfig:
    size: int = option(preprocess.INPUT_SIZE, "the image network's input (pixels)", run=True)
    epochs: int = option(16, "epochs of the image network", run=True)
    batch_size: int = option(16, "images per batch", run=True)
    lr: float = option(1e-3, "the one-cycle schedule's peak learning rate", run=True)
    patience: int = option(
        0,
        "early stopping: epochs without a better validation loss, after the warm-up, before "
        "training stops; 0: never (the one-cycle schedule's last epochs, at a small learning "
        "rate, are what settles the network; stopping first kept a mid-schedule epoch)",
        run=True,
    )
    rotate: float = option(10.0, "max rotation (degrees) of the augmentation")
    lighting: float = option(0.2, "max brightness/contrast change of the augmentation")
    metal: bool = option(True, "a second input channel marking metal (`metal_stem`)", run=True)
    any_render: bool = option(False, "accept thumbnails of an older rendering contract")
    jitter: float = option(1.0, "headroom / patch jitter while training (0: none)", run=True)
    raise_window: float = option(0.25, "share of patches whose window channel is raised")
    patch_zoom: float = option(0.0, "half the patches magnified up to 1 + this while training")
    lift_floor: float = option(LIFT_FLOOR, "the patch net's lift against the patch's own")
    second_look: bool | None = option(None, "patches for biopsy (None: if thumbnails carry them)")
    mag_mirror: bool = option(
        True,
        "with the second look, mag as the mean of the image network's logits on the image "
        "and its left-right mirror; the biopsy blend keeps the plain logit (one more pass "
        "per image; measured by benchmarks/bench_robustness.py)",
        run=True,
    )
    mag_nets: int = option(
        1,
        "with the second look, image networks trained alike from seeds seed, seed + 1000, ...; "
        "mag is the mean of their logits (each adds a training and a pass per image)",
        run=True,
    )
    folds: int = option(3, "out-of-fold biopsy thresholds (< 2: from validation)")
    patch_epochs: int = option(24, "the second look's fixed schedule")
    bf16: bool | None = option(None, "bfloat16 autocast (None: if the CPU has it)")
    warmup: int | None = option(None, "epochs before best-epoch tracking (None: a third)")
    seed: int = option(0, "the random seed of the split's shuffles and the networks", run=True)
    pretrained: bool | None = option(
        None, "ImageNet weights (None: if cached, `mammo weights import`)", run=True
    )
    target_recall: float = option(
        TARGET_RECALL, "the share of positives each flag's threshold keeps", run=True
    )
    recall_of: str = option(
        "auto",
        "what target_recall counts: studies (a study's score is its best image's, as the "
        "study CSV flags it), images, or auto: studies for a threshold from out-of-fold "
        "scores (biopsy; never above validation's), images for one from the validation "
        "split (mag: its few positive studies leave a wide gap whose middle sits too high)",
        run=True,
    )
    threads: int | None = option(None, "torch threads (None: torch's default)")
    extra: dict = field(default_factory=dict)


def run_options() -> list:
    """The fields of TrainConfig a pipeline run may set, in declaration order."""
    return [f for f in fields(TrainConfig) if f.metadata.get("run")]
