"""Train the two-flag model (fastai ResNet18, multi-label), export it to ONNX, quantize it.

Needs the `train` extra (torch, fastai, onnx); everything downstream of the ONNX
file needs only ONNX Runtime. Grayscale in, one channel; inside the network a
parameter-free metal channel goes beside it (`metal_stem`), so the first convolution
has two (``vision_learner(n_in=2)``; with ImageNet weights the image channel gets the
sum of the RGB kernels and the metal channel starts at zero). The exported graph
includes the normalization and a sigmoid (see preprocess.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import metrics, preprocess
from .dataset import Example, Snapshot
from .splits import shuffle_key
from .thumbnails import RENDER_VERSION

#: A missed flag is worse than a false alarm: thresholds keep this share of positives.
TARGET_RECALL = 0.98


@dataclass
class TrainConfig:
    size: int = preprocess.INPUT_SIZE
    epochs: int = 16
    batch_size: int = 16
    lr: float = 1e-3
    patience: int = 5  # early stopping on validation loss, after the warm-up
    rotate: float = 10.0  # max rotation (degrees) of the augmentation
    lighting: float = 0.2  # max brightness/contrast change of the augmentation
    metal: bool = True  # a second input channel marking metal (see `metal_stem`)
    any_render: bool = False  # accept thumbnails of an older rendering contract (comparisons)
    bf16: bool | None = None  # bfloat16 autocast while training (None: if the CPU has it)
    warmup: int | None = None  # epochs before best-epoch tracking starts (None: a third)
    seed: int = 0
    pretrained: bool | None = None  # None: use ImageNet weights if they are cached
    target_recall: float = TARGET_RECALL
    threads: int | None = None
    extra: dict = field(default_factory=dict)


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): there autocast
    trains ~1.6x faster; elsewhere it would be slower than float32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def imagenet_weights_cached() -> bool:
    import torch

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return any(checkpoints.glob("resnet18-*.pth"))


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


#: The metal channel marks model-input pixels from about this display level up: with the
#: headroom contract (display.display8) only values near the stored extreme get there.
METAL_LEVEL = 250


def metal_stem(conv1):
    """`conv1` fed with a second channel that marks metal (see `METAL_LEVEL`).

    The network sees the image and, beside it, where the brightest levels are, spread
    over 3 x 3 so that a 1-px clip survives the stride-2 stem. Only the image itself
    comes in (normalized, as the first layer always sees it), so the exported graph's
    input contract is unchanged.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class MetalChannel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            level = (x * preprocess.STD + preprocess.MEAN) * 255.0
            metal = ((level - (METAL_LEVEL - 3.0)) / 4.0).clamp(0.0, 1.0)
            metal = F.max_pool2d(metal, 3, stride=1, padding=1)
            return torch.cat([x, (metal - 0.5) * 4.0], dim=1)

    return nn.Sequential(MetalChannel(), conv1)


def _image_kernels_from_rgb(conv) -> None:
    """ImageNet's first convolution on [image, metal]: the image channel gets the sum of
    the RGB kernels (gray = R = G = B), the metal channel zeros, so the pretrained
    network starts exactly where it would on the image alone."""
    import torch
    from torchvision.models import ResNet18_Weights, resnet18

    rgb = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1).conv1.weight  # from the cache
    with torch.no_grad():
        conv.weight[:, 0] = rgb.sum(dim=1)
        conv.weight[:, 1] = 0.0


def network(pretrained: bool = False, metal: bool = True):
    """The fastai ResNet18 (1 image channel in, 2 logits out), with the metal channel."""
    from fastai.vision.learner import create_vision_model
    from torchvision.models import resnet18

    net = create_vision_model(resnet18, n_out=2, n_in=2 if metal else 1, pretrained=pretrained)
    if metal:
        add_metal_stem(net, pretrained)
    return net


def add_metal_stem(net, pretrained: bool) -> None:
    """Put `metal_stem` in front of the first convolution of a fastai ResNet built with
    two input channels (its pretrained kernels set up by `_image_kernels_from_rgb`)."""
    if pretrained:
        _image_kernels_from_rgb(net[0][0])
    net[0][0] = metal_stem(net[0][0])


class ExportModel:
    """Builds the graph that ships: normalize -> fastai model -> sigmoid."""

    @staticmethod
    def wrap(model):
        import torch
        from torch import nn

        class Shipped(nn.Module):
            def __init__(self, body: nn.Module) -> None:
                super().__init__()
                self.body = body
                self.register_buffer("mean", torch.tensor(preprocess.MEAN))
                self.register_buffer("std", torch.tensor(preprocess.STD))

            def forward(self, image: torch.Tensor) -> torch.Tensor:
                return torch.sigmoid(self.body((image - self.mean) / self.std))

        return Shipped(model).eval()


def _torch_probs(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(preprocess.to_batch(list(images[i : i + batch])))
            out.append(model(x).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def train(snapshot: Snapshot, out_dir: Path, config: TrainConfig | None = None) -> dict:
    """Train on the snapshot's train split, pick thresholds on validation, evaluate on
    the labeled hold-out, export ONNX. Returns the model card (also written as card.json)."""
    import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
    import fastai.callback.schedule  # noqa: F401  (Learner.fit_one_cycle)
    import torch
    from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
    from fastai.data.block import DataBlock, MultiCategoryBlock
    from fastai.data.transforms import IndexSplitter
    from fastai.losses import BCEWithLogitsLossFlat
    from fastai.metrics import accuracy_multi
    from fastai.vision.augment import aug_transforms
    from fastai.vision.core import PILImageBW
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner
    from torchvision.models import resnet18

    config = config or TrainConfig()
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
    arrays = np.stack([preprocess.load(e.thumbnail, size) for e in items])
    y = _labels(items)
    pretrained = imagenet_weights_cached() if config.pretrained is None else config.pretrained

    block = DataBlock(
        blocks=(
            ImageBlock(cls=PILImageBW),
            MultiCategoryBlock(encoded=True, vocab=list(preprocess.FLAGS)),
        ),
        get_x=lambda i: PILImageBW.create(arrays[i]),
        get_y=lambda i: y[i],
        splitter=IndexSplitter(list(range(len(train_ex), len(items)))),
        # Mammograms: flips and small rotations, brightness/contrast; no crop or
        # zoom that could cut a marker out, no warp.
        batch_tfms=aug_transforms(
            do_flip=True,
            flip_vert=True,
            max_rotate=config.rotate,
            min_zoom=1.0,
            max_zoom=1.0,
            max_lighting=config.lighting,
            max_warp=0.0,
            pad_mode="zeros",
        ),
    )
    dls = block.dataloaders(
        list(range(len(items))), bs=min(config.batch_size, len(train_ex)), num_workers=0
    )
    dls.rng.seed(config.seed)
    work = out_dir / "fastai"
    learn = vision_learner(
        dls,
        resnet18,
        n_in=2 if config.metal else 1,
        n_out=2,
        pretrained=pretrained,
        normalize=False,  # normalization is in the shipped graph (and mirrored below)
        loss_func=BCEWithLogitsLossFlat(),
        metrics=[accuracy_multi],
        path=work,
    )
    from fastai.vision.augment import Normalize

    learn.dls.add_tfms([Normalize.from_stats([preprocess.MEAN], [preprocess.STD])], "after_batch")
    if config.metal:
        add_metal_stem(learn.model, pretrained)
    if pretrained:
        learn.unfreeze()  # the metal channel's kernels must learn; so may the rest
    history: list[dict] = []

    from fastai.callback.core import Callback

    class Record(Callback):
        order = 90

        def after_epoch(self) -> None:
            vals = self.recorder.values[-1] if self.recorder.values else []
            history.append(
                {
                    "epoch": self.epoch,
                    "train_loss": float(vals[0]) if len(vals) > 0 else None,
                    "valid_loss": float(vals[1]) if len(vals) > 1 else None,
                    "accuracy_multi": float(vals[2]) if len(vals) > 2 else None,
                }
            )

    chatter = io.StringIO()  # fastai prints "Better model found ..." itself
    # A from-scratch network's BatchNorm statistics lag its weights during the first,
    # high-learning-rate epochs, so validation loss swings wildly there: best-epoch
    # saving and early stopping only look at epochs after the warm-up.
    warmup = config.warmup if config.warmup is not None else config.epochs // 3
    warmup = min(warmup, config.epochs - 1)

    class AfterWarmup:
        def after_epoch(self) -> None:
            if self.epoch >= warmup:
                super().after_epoch()

    class SaveBest(AfterWarmup, SaveModelCallback):
        pass

    class StopEarly(AfterWarmup, EarlyStoppingCallback):
        pass

    bf16 = cpu_bf16_supported() if config.bf16 is None else config.bf16

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

    with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(chatter):
        learn.fit_one_cycle(
            config.epochs,
            config.lr,
            cbs=[
                SaveBest(monitor="valid_loss", fname="best", with_opt=False),
                StopEarly(monitor="valid_loss", patience=config.patience),
                Record(),
            ]
            + ([CpuBf16()] if bf16 else []),
        )
    shipped = ExportModel.wrap(learn.model.cpu())
    valid_arrays = arrays[len(train_ex) :]
    valid_p = _torch_probs(shipped, valid_arrays)
    valid_y = y[len(train_ex) :]
    thresholds = {
        flag: metrics.threshold_for_recall(valid_y[:, k], valid_p[:, k], config.target_recall)
        for k, flag in enumerate(preprocess.FLAGS)
    }
    holdout_arrays = (
        np.stack([preprocess.load(e.thumbnail, size) for e in holdout_ex])
        if holdout_ex
        else np.zeros((0, size, size), np.uint8)
    )
    holdout_p = _torch_probs(shipped, holdout_arrays)
    holdout_y = _labels(holdout_ex) if holdout_ex else np.zeros((0, 2), np.float32)

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(learn.model.state_dict(), out_dir / "model.pt")  # for Grad-CAM
    with contextlib.redirect_stdout(chatter):  # the exporter narrates its steps
        onnx_path = export_onnx(shipped, out_dir / "model.onnx", size)
    np.savez_compressed(
        out_dir / "validation.npz", images=valid_arrays, labels=valid_y, torch_probs=valid_p
    )
    card = {
        "architecture": "resnet18 (fastai vision_learner), 1 image channel"
        + (" + metal channel (metal_stem)" if config.metal else "")
        + ", 2 sigmoid outputs",
        "flags": list(preprocess.FLAGS),
        "input_size": size,
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
        "target_recall": config.target_recall,
        "validation": _report(valid_y, valid_p, thresholds),
        "holdout": _report(holdout_y, holdout_p, thresholds),
        "history": history,
        "best_epoch": _best_epoch(history, warmup),
        "warmup_epochs": warmup,
        "config": {k: v for k, v in vars(config).items() if k != "extra"},
        "preprocessing": preprocess.CONTRACT | {"S": size, "render": render},
        "versions": _versions(),
        "training_seconds": round(time.perf_counter() - t0, 1),
        "bf16_autocast": bf16,
        "onnx": onnx_path.name,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2, default=_json_default))
    return card


def _best_epoch(history: list[dict], warmup: int) -> int | None:
    losses = [
        (h["valid_loss"], h["epoch"])
        for h in history
        if h["valid_loss"] is not None and h["epoch"] >= warmup
    ]
    return min(losses)[1] if losses else None


def _report(y: np.ndarray, p: np.ndarray, thresholds: dict) -> dict:
    return {
        flag: metrics.flag_report(y[:, k], p[:, k], thresholds[flag]) if len(y) else None
        for k, flag in enumerate(preprocess.FLAGS)
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


def export_onnx(model, path: Path, size: int) -> Path:
    """ONNX with a dynamic batch axis: input `image` [N,1,S,S] float32 -> `probs` [N,2]."""
    import torch

    dummy = torch.zeros(2, 1, size, size)
    batch = torch.export.Dim("N", min=1, max=4096)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=[preprocess.CONTRACT["input_name"]],
        output_names=[preprocess.CONTRACT["output_name"]],
        dynamic_shapes={"image": {0: batch}},
        external_data=False,
        dynamo=True,
    )
    return path


def quantize_int8(
    fp32: Path, int8: Path, calibration: np.ndarray, per_channel: bool = True
) -> Path:
    """Static QDQ int8 quantization, calibrated on `calibration` (uint8 [n,S,S] inputs)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [
                    preprocess.to_batch(list(calibration[i : i + 16]))
                    for i in range(0, len(calibration), 16)
                ]
            )

        def get_next(self):
            b = next(self.batches, None)
            return None if b is None else {preprocess.CONTRACT["input_name"]: b}

    pre = int8.with_name(int8.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # fails on fastai Concat
    quantize_static(
        str(pre),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        op_types_to_quantize=["Conv"],  # the backbone; the small head stays fp32
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    pre.unlink(missing_ok=True)
    return int8
