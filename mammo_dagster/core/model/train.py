"""Train the two-flag model (fastai, multi-label) and export it (`core.model.export`).

Needs the `train` extra (torch, fastai, onnx); everything downstream of the ONNX
file needs only ONNX Runtime. The networks are in `core.model.network`: for rendering
contract v3 thumbnails, which carry patches, the image network (ResNet18) and the
second look over the patches (`MammoNet`); for older thumbnails the image network
alone. The shape follows fastai's `train_imagenette.py`: a pure `get_dls`, a `fit`
with module-level callbacks, then thresholds, evaluation and export.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from fastai.learner import Learner

from .. import metrics
from ..allocator import keep_freed_memory
from ..imaging import preprocess
from ..imaging.thumbnails import RENDER_VERSION
from .callbacks import CpuBf16, FlagLoss, InputJitter, Record, SaveBest, StopEarly
from .config import RECALL_UNITS, TARGET_RECALL, TrainConfig  # noqa: F401  (re-exported: callers train)
from .dataset import Example, Snapshot
from .export import export_onnx
from .network import (  # noqa: F401  (re-exported for the benchmarks and tests)
    METAL_LEVEL,
    METAL_LEVELS,
    ExportModel,
    headroom_jitter,
    metal_stem,
    network,
    patch_jitter,
)
from .splits import shuffle_key


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): there autocast
    trains ~1.6x faster; elsewhere it would be slower than float32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def imagenet_weights_cached() -> bool:
    """Whether ImageNet ResNet18 weights are in torch's cache (`mammo weights import`)."""
    from .weights import cached

    return cached() is not None


def _labels(examples: list[Example]) -> np.ndarray:
    return np.array([[e.biopsy, e.mag] for e in examples], dtype=np.float32)


def _valid_split(snapshot: Snapshot) -> tuple[list[Example], list[Example], str]:
    """Train and validation examples (the hold-out is never among them)."""
    train, valid = snapshot.split("train"), snapshot.split("valid")
    if valid and train:
        return train, valid, "by patient (salted hash)"
    # Too few patients for the hash to fill both: move whole patients, deterministically.
    pool = sorted(
        train + valid,
        key=lambda e: (shuffle_key(e.patient_key, "valid-fallback"), e.sop_instance_uid),
    )
    patients = list(dict.fromkeys(e.patient_key for e in pool))
    n_valid = max(1, round(len(patients) * 0.2)) if len(patients) > 1 else 0
    chosen = set(patients[:n_valid])
    return (
        [e for e in pool if e.patient_key not in chosen],
        [e for e in pool if e.patient_key in chosen],
        "by patient (fallback: too few patients for the hash split)",
    )


def load_inputs(examples: list[Example], size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 model input images [n, S, S] and, when every thumbnail carries them, their
    patches [n, K, C, P, P] (else None)."""
    loaded = [preprocess.load_input(e.thumbnail, size) for e in examples]
    if not loaded:
        return np.zeros((0, size, size), np.uint8), None
    images = np.stack([image for image, _ in loaded])
    if any(p is None for _, p in loaded):
        return images, None
    return images, np.stack([p for _, p in loaded])


def get_dls(images: np.ndarray, y: np.ndarray, n_train: int, config: TrainConfig):
    """fastai DataLoaders of model input images: the first `n_train` train, the rest
    validate. Flips, small rotations and brightness/contrast; no crop or zoom that could
    cut a marker out, no warp."""
    from fastai.data.block import DataBlock, MultiCategoryBlock
    from fastai.data.transforms import IndexSplitter
    from fastai.vision.augment import Normalize, aug_transforms
    from fastai.vision.core import PILImageBW
    from fastai.vision.data import ImageBlock

    block = DataBlock(
        blocks=(ImageBlock(cls=PILImageBW), MultiCategoryBlock(encoded=True,
                                                               vocab=list(preprocess.FLAGS))),
        get_x=lambda i: PILImageBW.create(images[i]),
        get_y=lambda i: y[i],
        splitter=IndexSplitter(list(range(n_train, len(images)))),
        batch_tfms=aug_transforms(
            do_flip=True, flip_vert=True, max_rotate=config.rotate, min_zoom=1.0,
            max_zoom=1.0, max_lighting=config.lighting, max_warp=0.0, pad_mode="zeros",
        ),
    )  # fmt: skip
    dls = block.dataloaders(
        list(range(len(images))), bs=min(config.batch_size, n_train), num_workers=0
    )
    dls.rng.seed(config.seed)
    dls.add_tfms([Normalize.from_stats([preprocess.MEAN], [preprocess.STD])], "after_batch")
    return dls


def fit(
    dls,
    model,
    config: TrainConfig,
    work: Path,
    flags: list[int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Learner, list[dict], int, bool]:
    """Train `model` one-cycle on the loss of `flags` (default: every flag), keeping the
    best epoch after the warm-up (and, with a `config.patience`, stopping early). Returns
    (learner, history, warm-up epochs, bf16 used)."""
    import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
    import fastai.callback.schedule  # noqa: F401  (Learner.fit_one_cycle)
    from fastai.losses import BCEWithLogitsLossFlat
    from fastai.metrics import accuracy_multi

    loss = BCEWithLogitsLossFlat() if flags is None else FlagLoss(flags)
    learn = Learner(dls, model, loss_func=loss, metrics=[accuracy_multi], path=work)
    history: list[dict] = []
    warmup = config.warmup if config.warmup is not None else config.epochs // 3
    warmup = min(warmup, config.epochs - 1)
    bf16 = cpu_bf16_supported() if config.bf16 is None else config.bf16
    callbacks = [
        SaveBest(warmup, monitor="valid_loss", fname="best", with_opt=False),
        Record(history, progress),
        InputJitter(config.jitter),
    ] + ([CpuBf16()] if bf16 else [])
    if config.patience > 0:
        callbacks.append(StopEarly(warmup, monitor="valid_loss", patience=config.patience))
    chatter = io.StringIO()  # fastai prints "Better model found ..." itself
    with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(chatter):
        learn.fit_one_cycle(config.epochs, config.lr, cbs=callbacks)
    return learn, history, warmup, bf16


def _patch_set(patches: np.ndarray, mag: np.ndarray, sets: int) -> np.ndarray:
    """The patches the second look trains on: with two sets (contract v5) the wide set of
    the images labeled magnified, the contact-size set of the others."""
    if sets == 1:
        return patches
    k = patches.shape[1] // 2
    return np.where((mag > 0.5)[:, None, None, None, None], patches[:, k:], patches[:, :k])


def _torch_probs(model, images: np.ndarray, patches: np.ndarray | None = None,
                 batch: int = 64) -> np.ndarray:  # fmt: skip
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            args = [torch.from_numpy(preprocess.to_batch(list(images[i : i + batch])))]
            if patches is not None:
                args.append(torch.from_numpy(preprocess.to_patch_batch(
                    list(patches[i : i + batch]))))  # fmt: skip
            out.append(model(*args).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def train(
    snapshot: Snapshot,
    out_dir: Path,
    config: TrainConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train on the snapshot's train split, pick thresholds on validation, evaluate on
    the labeled hold-out, export ONNX. Returns the model card (also written as card.json).
    `progress` gets a line per epoch and per second-look network."""
    config = config or TrainConfig()
    keep_freed_memory()  # each step's activations reuse the last step's memory
    if config.recall_of not in RECALL_UNITS:
        raise ValueError(
            f"recall_of must be one of {', '.join(RECALL_UNITS)}, not {config.recall_of!r}"
        )
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
    warnings.filterwarnings("ignore", message=".*mode.chained_assignment.*")
    t0 = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    train_ex, valid_ex, split_rule = _valid_split(snapshot)
    holdout_ex = snapshot.split("holdout")
    train_ids = {(e.sop_instance_uid, e.frame) for e in train_ex}
    assert not train_ids & {(e.sop_instance_uid, e.frame) for e in holdout_ex}
    assert not {e.patient_key for e in train_ex} & {e.patient_key for e in holdout_ex}
    if not train_ex or not valid_ex:
        raise ValueError(
            f"need labeled images of at least 2 patients outside the hold-out to train "
            f"(have {len(train_ex)} train, {len(valid_ex)} validation)"
        )
    size = config.size
    items = train_ex + valid_ex
    render = preprocess.thumbnail_render([e.thumbnail for e in items + holdout_ex])
    if render != RENDER_VERSION and not config.any_render:
        raise preprocess.RenderMismatch(
            f"the labeled images' thumbnails were rendered by contract v{render}, this "
            f"version renders v{RENDER_VERSION}: re-run the thumbnails of every drop "
            "(Dagster: backfill thumbnails), then train"
        )
    images, patches = load_inputs(items, size)
    second_look = patches is not None if config.second_look is None else config.second_look
    if second_look and patches is None:
        raise ValueError("second_look needs thumbnails that carry patches (contract v3)")
    y = _labels(items)
    pretrained = imagenet_weights_cached() if config.pretrained is None else config.pretrained
    levels = METAL_LEVELS.get(render, METAL_LEVELS[RENDER_VERSION])
    image_net = network(pretrained, config.metal, levels, second_look=False)
    dls = get_dls(images, y, len(train_ex), config)
    # with the second look the image network answers mag alone: biopsy would take its capacity
    mag_only = [preprocess.FLAGS.index("mag")] if second_look else None
    learn, history, warmup, bf16 = fit(
        dls, image_net, config, out_dir / "fastai", mag_only, progress
    )
    n = len(train_ex)
    image_nets = [learn.model.cpu()]
    best_epochs = [_best_epoch(history, warmup)]
    for i in range(1, config.mag_nets if second_look else 1):  # more seeds for mag
        seed = config.seed + 1000 * i
        torch.manual_seed(seed)
        said = None
        if progress:
            tag = f"image network {i + 1}/{config.mag_nets}"
            said = lambda line, tag=tag: progress(line.replace("image network", tag, 1))  # noqa: E731
        more, more_history, _, _ = fit(
            get_dls(images, y, n, replace(config, seed=seed)),
            network(pretrained, config.metal, levels, second_look=False),
            config, out_dir / f"fastai{i}", mag_only, said,
        )  # fmt: skip
        image_nets.append(more.model.cpu())
        best_epochs.append(_best_epoch(more_history, warmup))
    look = None
    if second_look:
        from .network import MammoNet, MeanNet
        from .second_look import PatchConfig, train_second_look

        sets = preprocess.patch_sets(render)
        look = train_second_look(
            _patch_set(patches, y[:, 1], sets), y[:, 0], [e.patient_key for e in items],
            np.arange(n, len(items)),
            PatchConfig(epochs=config.patch_epochs, folds=config.folds, jitter=config.jitter,
                        raise_window=config.raise_window, zoom=config.patch_zoom,
                        lift_floor=config.lift_floor,
                        seed=config.seed),
            progress,
        )  # fmt: skip
        mag_net = image_nets[0] if len(image_nets) == 1 else MeanNet(image_nets)
        shipped = ExportModel.wrap(MammoNet(mag_net, look.net, sets, config.mag_mirror))
    else:
        patches = None
        shipped = ExportModel.wrap(learn.model.cpu())
    valid_p = _torch_probs(shipped, images[n:], None if patches is None else patches[n:])
    valid_y = y[n:]
    recall = config.target_recall
    unit = _recall_units(config.recall_of)

    def groups(ex: list[Example], u: str) -> list[str] | None:
        return [e.study_instance_uid for e in ex] if u == "studies" else None

    u = unit["validation"]
    thresholds = {
        flag: metrics.threshold_for_recall(
            valid_y[:, k], valid_p[:, k], recall, groups(valid_ex, u)
        )
        for k, flag in enumerate(preprocess.FLAGS)
    }
    validation = _report(valid_y, valid_p, thresholds, valid_ex)
    validation_thresholds = dict(thresholds)  # what validation alone would have chosen
    threshold_rule = {f: f"{recall:.0%} recall of {u} on validation ({len(valid_y)} "
                      "images)" for f in preprocess.FLAGS}  # fmt: skip
    image_rule = {  # the same rule counting images, for comparison
        flag: metrics.threshold_for_recall(valid_y[:, k], valid_p[:, k], recall)
        for k, flag in enumerate(preprocess.FLAGS)
    }
    chosen_on = {  # per flag: what its threshold was chosen on, for the notes below
        flag: ("the validation split", valid_y[:, k], valid_p[:, k], groups(valid_ex, u))
        for k, flag in enumerate(preprocess.FLAGS)
    }
    if look is not None and look.oof is not None:  # the biopsy flag: out of fold
        chosen_on["biopsy"] = (
            "out-of-fold scores", y[:, 0], look.oof,
            groups(items, unit["out_of_fold"]),
        )  # fmt: skip
        t, rule = out_of_fold_threshold(
            y[:, 0], look.oof, [e.study_instance_uid for e in items],
            validation_thresholds["biopsy"], recall, config.recall_of,
        )  # fmt: skip
        threshold_rule["biopsy"] = f"{rule} ({look.folds} folds by patient, {len(y)} images)"
        thresholds["biopsy"] = t
        image_rule["biopsy"] = metrics.threshold_for_recall(y[:, 0], look.oof, recall)
        validation["biopsy"] = _flag_report(y[:, 0], look.oof, t, items)
    threshold_notes = [
        note
        for flag, (source, fy, fp, fg) in chosen_on.items()
        if (note := metrics.threshold_note(flag, fy > 0.5, fp, thresholds[flag], source, fg))
    ]
    if look is not None and look.fits.get("shipped"):
        from .second_look import FIT_TRIES, MIN_FIT_AUC

        if (best_fit := max(look.fits["shipped"])) < MIN_FIT_AUC:
            threshold_notes.append(
                f"biopsy: the second look's network ranks its own training images at AUC "
                f"{best_fit:.2f} after {FIT_TRIES} fits (a healthy fit: ~1.0, at least "
                f"{MIN_FIT_AUC}): its flags can't be trusted; retrain, or check the labels"
            )
    hold_images, hold_patches = load_inputs(holdout_ex, size)
    holdout_p = _torch_probs(shipped, hold_images, hold_patches if second_look else None)
    holdout_y = _labels(holdout_ex) if holdout_ex else np.zeros((0, 2), np.float32)

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(shipped.body.state_dict(), out_dir / "model.pt")  # for Grad-CAM
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps
        onnx_path = export_onnx(shipped, out_dir / "model.onnx", size)
    if look is not None and look.oof is not None:  # what the biopsy threshold was chosen on
        np.savez_compressed(
            out_dir / "out_of_fold.npz",
            sop_instance_uid=np.array([e.sop_instance_uid for e in items]),
            frame=np.array([e.frame for e in items]),
            study_instance_uid=np.array([e.study_instance_uid for e in items]),
            labels=y,
            biopsy=look.oof,
        )
    extra = {} if patches is None else {"patches": patches[n:]}
    np.savez_compressed(out_dir / "validation.npz", images=images[n:], labels=valid_y,
                        torch_probs=valid_p, **extra)  # fmt: skip
    card = {
        "architecture": _architecture(config, second_look),
        "flags": list(preprocess.FLAGS),
        "input_size": size,
        "second_look": second_look,
        "pretrained": bool(pretrained),
        "pretrained_note": "ImageNet weights (cached locally)"
        if pretrained
        else "trained from scratch (no ImageNet weights cached)",
        "label_seq": snapshot.label_seq,
        "label_count": snapshot.label_count,
        "counts": snapshot.counts(),
        "vendors": snapshot.vendors(),
        "split_rule": split_rule,
        "train_images": len(train_ex),
        "valid_images": len(valid_ex),
        "holdout_images": len(holdout_ex),
        "thresholds": thresholds,
        "threshold_rule": threshold_rule,
        "threshold_notes": threshold_notes,
        "validation_thresholds": validation_thresholds,
        "image_rule_thresholds": image_rule,
        "target_recall": config.target_recall,
        "validation": validation,
        "second_look_seconds": round(look.seconds, 1) if look else None,
        "second_look_fits": (
            {name: [round(a, 4) for a in aucs] for name, aucs in look.fits.items()}
            if look
            else None
        ),
        "holdout": _report(holdout_y, holdout_p, thresholds, holdout_ex),
        "history": history,
        "best_epoch": best_epochs[0],
        "mag_net_best_epochs": best_epochs,
        "warmup_epochs": warmup,
        "config": {k: v for k, v in vars(config).items() if k != "extra"},
        "preprocessing": preprocess.CONTRACT | {"S": size, "render": render},
        "metal_levels": list(levels) if config.metal else None,
        "versions": _versions(),
        "training_seconds": round(time.perf_counter() - t0, 1),
        "bf16_autocast": bf16,
        "onnx": onnx_path.name,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2, default=_json_default))
    return card


def _architecture(config: TrainConfig, second_look: bool) -> str:
    image = "resnet18 (fastai), 1 image channel" + (
        " + metal channel (metal_stem)" if config.metal else ""
    )
    if second_look:
        nets = f", {config.mag_nets} seeds' mean logit," if config.mag_nets > 1 else ""
        mirror = " (the mean over the image and its left-right mirror)" if config.mag_mirror else ""
        return (f"{image}{nets} for mag{mirror}; biopsy: the highest score of a patch CNN over "
                "the patches")  # fmt: skip
    return image + ", 2 sigmoid outputs"


def _best_epoch(history: list[dict], warmup: int) -> int | None:
    losses = [
        (h["valid_loss"], h["epoch"])
        for h in history
        if h["valid_loss"] is not None and h["epoch"] >= warmup
    ]
    return min(losses)[1] if losses else None


def out_of_fold_threshold(
    y: np.ndarray, oof: np.ndarray, studies: list[str], valid_t: float, recall: float,
    recall_of: str,
) -> tuple[float, str]:  # fmt: skip
    """The threshold for `recall` on out-of-fold scores and the rule that chose it.
    auto: counted in studies, never above `valid_t` (validation's threshold): the
    out-of-fold positive studies can all score ~1.0, and the middle of their gap then
    sits above new positives."""
    u = _recall_units(recall_of)["out_of_fold"]
    t = metrics.threshold_for_recall(y, oof, recall, studies if u == "studies" else None)
    rule = f"{recall:.0%} recall of {u} on out-of-fold scores"
    if recall_of == "auto" and valid_t < t:
        return float(valid_t), f"{rule}, capped at validation's ({valid_t:.3f})"
    return t, rule


def _recall_units(recall_of: str) -> dict[str, str]:
    """What the target recall counts for a threshold chosen on out-of-fold scores and for
    one chosen on the validation split (`TrainConfig.recall_of`)."""
    if recall_of == "auto":
        return {"out_of_fold": "studies", "validation": "images"}
    return {"out_of_fold": recall_of, "validation": recall_of}


def _report(y: np.ndarray, p: np.ndarray, thresholds: dict, examples: list[Example]) -> dict:
    return {
        flag: _flag_report(y[:, k], p[:, k], thresholds[flag], examples) if len(y) else None
        for k, flag in enumerate(preprocess.FLAGS)
    }


def _flag_report(y: np.ndarray, p: np.ndarray, threshold: float, examples: list[Example]) -> dict:
    """One flag's image metrics, and under "studies" the same counted in studies."""
    sy, sp = metrics.by_group(y > 0.5, p, [e.study_instance_uid for e in examples])
    return metrics.flag_report(y, p, threshold) | {
        "studies": metrics.flag_report(sy, sp, threshold)
    }


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def _versions() -> dict:
    import fastai
    import onnxruntime
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "fastai": fastai.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
