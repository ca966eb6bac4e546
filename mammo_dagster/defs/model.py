"""The model half of the lineage: labels -> training_set -> trained_model -> onnx_model ->
image_predictions[drop] -> study_predictions."""

import time
import warnings

import dagster as dg
import numpy as np
from pydantic import Field, create_model

from mammo_dagster.core import metrics
from mammo_dagster.core.imaging import preprocess
from mammo_dagster.core.imaging.batch import thumbnail_name
from mammo_dagster.core.model.config import TrainConfig, run_options
from mammo_dagster.core.model.dataset import build_snapshot, load_snapshot, save_snapshot
from mammo_dagster.core.model.modelstore import (
    CurrentModel,
    ModelCard,
    current_model_file,
    model_dir,
    newest_trained,
    next_version,
    read_current,
    write_current,
)
from mammo_dagster.core.store import queries
from mammo_dagster.core.store.audit import header_baseline

from .ingest import thumbnails
from .markdown import md_table
from .model_metadata import confusion_table, curves, holdout_metadata, metrics_table, rounded
from .partitions import drops
from .resources import MammoHome, StoreResource

PARITY_MAX_DIFF = 1e-4
DATA_VERSION_TAG = "dagster/data_version"  # dagster's own tag key
INT8_MIN_AGREEMENT = 0.995
INT8_MAX_AUC_DROP = 0.005


def _observe_labels(store: StoreResource) -> dg.ObserveResult:
    count, newest, current = queries.label_observation(store.store())
    return dg.ObserveResult(
        data_version=dg.DataVersion(f"{count}-{newest}"),
        metadata={"events": count, "newest_seq": newest, "labeled_images": current},
    )


with warnings.catch_warnings():  # observable source assets are "beta"; we know
    warnings.simplefilter("ignore")
    labels = dg.observable_source_asset(
        name="labels",
        group_name="model",
        description="Label events written by the labeler (and `mammo labels import`); "
        "Dagster observes them (count and newest event), it does not own them.",
    )(_observe_labels)


@dg.asset(group_name="model", deps=[labels, thumbnails], kinds={"duckdb"})
def training_set(
    context: dg.AssetExecutionContext, paths: MammoHome, store: StoreResource
) -> dg.MaterializeResult:
    """Current labels joined with thumbnails, split by patient (train / valid / locked
    hold-out); a snapshot file the model trains on."""
    home = paths.data
    snapshot = build_snapshot(store.store(), home.thumbnails)
    seen = _observe_labels(store)  # what it was built from: `labels` is observed by each build
    context.log_event(dg.AssetObservation(
        asset_key=labels.key, metadata=seen.metadata,
        tags={DATA_VERSION_TAG: seen.data_version.value},
    ))  # fmt: skip
    path = save_snapshot(snapshot, home.training_sets / "current.csv")
    save_snapshot(snapshot, home.training_sets / f"labels-{snapshot.label_seq}.csv")
    counts = snapshot.counts()
    for warning in snapshot.warnings():
        context.log.warning(warning)
    return dg.MaterializeResult(
        metadata={
            "images": len(snapshot.examples),
            "label_seq": snapshot.label_seq,
            "missing_thumbnails": snapshot.missing_thumbnails,
            "counts": dg.MetadataValue.md(
                md_table(
                    ["split", *next(iter(counts.values())).keys()],
                    [[s, *counts[s].values()] for s in counts],
                )
            ),
            "vendors": dg.MetadataValue.json(snapshot.vendors()),
            "warnings": dg.MetadataValue.md(
                "\n".join(f"- {w}" for w in snapshot.warnings()) or "none"
            ),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


#: TrainingConfig fields whose TrainConfig (core.model.config) field has another name
CORE_NAMES = {"metal_channel": "metal"}
PRETRAINED = {"auto": None, "yes": True, "no": False}


class _RunConfig(dg.Config):
    def to_core(self) -> TrainConfig:
        """The core's TrainConfig with these values."""
        values = {CORE_NAMES.get(k, k): getattr(self, k) for k in type(self).model_fields}
        return TrainConfig(**values | {"pretrained": PRETRAINED[self.pretrained]})


def _run_config() -> type[_RunConfig]:
    """`trained_model`'s run config, built from the fields of the core's `TrainConfig` that
    a run may set (their defaults and help), `metal` named `metal_channel` and
    `pretrained` spelled auto | yes | no."""
    ours = {core: name for name, core in CORE_NAMES.items()}
    spec: dict = {}
    for f in run_options():
        help = f.metadata["help"]
        if f.name == "pretrained":
            spec[f.name] = (str, Field("auto", description=f"{help}: auto | yes | no"))
        else:
            spec[ours.get(f.name, f.name)] = (type(f.default), Field(f.default, description=help))
    return create_model("TrainingConfig", __base__=_RunConfig, __module__=__name__, **spec)


TrainingConfig = _run_config()


@dg.asset(group_name="model", deps=[training_set], kinds={"pytorch"})
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    paths: MammoHome,
    store: StoreResource,
) -> dg.MaterializeResult:
    """The image network (mag) and the second look (biopsy), thresholds for the target
    recall (biopsy: out-of-fold scores, mag: validation) with a note on each that stands on
    few positives, evaluated on the labeled hold-out; exported to ONNX with its model card."""
    from mammo_dagster.core.model.train import train

    home = paths.data
    snapshot = load_snapshot(home.training_sets / "current.csv")
    version = next_version(home.models)
    out = model_dir(home.models, version)
    report = train(
        snapshot,
        out,
        config.to_core(),
        progress=context.log.info,  # a line per epoch: a retrain is minutes, not silence
    )
    card = ModelCard.from_dict(report)
    card.version = version
    # the header-only rule on the same images, beside the model
    card.report["header_baseline"] = {
        split: header_baseline(store.store(), {e.sop_instance_uid for e in snapshot.split(split)})
        for split in ("valid", "holdout")
    }
    card.write(out)
    report = card.to_dict()
    context.log.info(f"trained {version} in {report['training_seconds']} s")
    notes = report.get("threshold_notes") or []
    for note in notes:
        context.log.warning(note)
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "folder": dg.MetadataValue.path(str(out)),
            "training_seconds": report["training_seconds"],
            "pretrained": "ImageNet weights" if report["pretrained"] else "no: from scratch",
            "best_epoch": report["best_epoch"],
            "thresholds": dg.MetadataValue.json(rounded(card.thresholds)),
            "threshold_notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "none"),
            **holdout_metadata(report),
            "metrics_validation": dg.MetadataValue.md(metrics_table(report, "validation")),
            "metrics_holdout": dg.MetadataValue.md(metrics_table(report, "holdout")),
            "confusion": dg.MetadataValue.md(confusion_table(report)),
            "header_rule_holdout": dg.MetadataValue.json(
                {
                    f: {k: rounded(r[k]) for k in ("precision", "recall", "f1", "accuracy")}
                    for f, r in report["header_baseline"]["holdout"].items()
                }
            ),
            "curves": dg.MetadataValue.md(curves(report, out)),
            "card": dg.MetadataValue.json(
                {
                    k: report[k]
                    for k in ("counts", "split_rule", "config", "versions", "preprocessing")
                }
            ),
        }
    )


ONNX_CHECKS = [
    dg.AssetCheckSpec(
        "onnx_matches_pytorch",
        asset="onnx_model",
        blocking=True,
        description=f"ONNX Runtime fp32 vs PyTorch on the validation images: max abs "
        f"probability difference <= {PARITY_MAX_DIFF}.",
    ),
    dg.AssetCheckSpec(
        "int8_agrees_with_fp32",
        asset="onnx_model",
        description=f"int8 decisions agree with fp32 on >= {INT8_MIN_AGREEMENT:.1%} of validation "
        f"images and AUC drops <= {INT8_MAX_AUC_DROP}; an int8 model that fails is discarded "
        "and predictions use fp32 (WARN).",
    ),
]


@dg.asset(group_name="model", deps=[trained_model], kinds={"onnx"}, check_specs=ONNX_CHECKS)
def onnx_model(
    context: dg.AssetExecutionContext, paths: MammoHome, store: StoreResource
) -> dg.MaterializeResult:
    """The newest trained model's ONNX graph and its int8 variant, checked against PyTorch;
    it becomes the current model (atomic pointer) only when both checks pass."""
    from mammo_dagster.core.model.export import quantize_int8
    from mammo_dagster.core.model.train import load_inputs
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    home = paths.data
    version = newest_trained(home.models)
    if version is None:
        raise dg.Failure("no trained model yet: materialize trained_model first")
    folder = model_dir(home.models, version)
    card = ModelCard.read(folder)
    data = np.load(folder / "validation.npz")
    images, torch_p, y = data["images"], data["torch_probs"], data["labels"]
    patches = data.get("patches")
    fp32 = OnnxModel(folder / "model.onnx")
    onnx_p = fp32.probs(images, patches)
    diff = float(np.max(np.abs(onnx_p - torch_p))) if len(images) else 0.0
    parity = dg.AssetCheckResult(
        check_name="onnx_matches_pytorch",
        passed=diff <= PARITY_MAX_DIFF,
        metadata={"max_abs_diff": diff, "images": len(images)},
    )
    snapshot = load_snapshot(home.training_sets / "current.csv")
    calibration, calibration_patches = load_inputs(snapshot.split("train")[:128], fp32.size)
    quantize_int8(folder / "model.onnx", folder / "model.int8.onnx", calibration,
                  calibration_patches if fp32.second_look else None)  # fmt: skip
    int8 = OnnxModel(folder / "model.int8.onnx")
    int8_p = int8.probs(images, patches)
    agree = float(np.mean(fp32.flags(onnx_p) == int8.flags(int8_p))) if len(images) else 1.0
    drops_ = {}
    for k, flag in enumerate(preprocess.FLAGS):
        a32, a8 = metrics.auc(y[:, k], onnx_p[:, k]), metrics.auc(y[:, k], int8_p[:, k])
        drops_[flag] = None if a32 is None or a8 is None else round(a32 - a8, 5)
    auc_ok = all(d is None or d <= INT8_MAX_AUC_DROP for d in drops_.values())
    int8_check = dg.AssetCheckResult(
        check_name="int8_agrees_with_fp32",
        passed=agree >= INT8_MIN_AGREEMENT and auc_ok,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"decision_agreement": agree, "auc_drop": dg.MetadataValue.json(drops_)},
    )
    if not int8_check.passed:  # never served: predictions fall back to fp32
        (folder / "model.int8.onnx").rename(folder / "model.int8.rejected.onnx")
    promoted = parity.passed
    if promoted:
        write_current(home.models, CurrentModel(version, card.label_seq, card.label_count))
    else:
        context.log.error(
            f"{version} failed its checks; the current model stays "
            f"{(read_current(home.models) or CurrentModel('none', 0, 0)).version}"
        )
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "current": promoted,
            "fp32": dg.MetadataValue.path(str(folder / "model.onnx")),
            "int8_used": int8_check.passed,
            "fp32_mb": round((folder / "model.onnx").stat().st_size / 2**20, 1),
            "preprocessing": dg.MetadataValue.json(card.preprocessing),
        },
        check_results=[parity, int8_check],
    )


class PredictConfig(dg.Config):
    threads: int = 2
    batch: int = 32
    int8: bool = True


@dg.asset(partitions_def=drops, group_name="model", deps=[thumbnails, onnx_model], kinds={"duckdb"})
def image_predictions(
    context: dg.AssetExecutionContext,
    config: PredictConfig,
    paths: MammoHome,
    store: StoreResource,
) -> dg.MaterializeResult:
    """Probabilities per flag for every frame of the drop, from the current model."""
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    drop = context.partition_key
    home = paths.data
    current, path = current_model_file(home.models, int8=config.int8)
    model = OnnxModel(path, threads=config.threads)
    db = store.store()
    frames = queries.ok_frames(db, drop)
    t0 = time.perf_counter()
    found = [(s, f) for s, f in frames if (home.thumbnails / thumbnail_name(s, f)).exists()]
    missing = len(frames) - len(found)
    probs = model.thumbnail_probs(
        [home.thumbnails / thumbnail_name(s, f) for s, f in found], batch=config.batch
    )
    rows = [
        [drop, s, f, current.version, float(p[0]), float(p[1]), bool(fl[0]), bool(fl[1])]
        for (s, f), p, fl in zip(found, probs, model.flags(probs), strict=True)
    ]
    elapsed = time.perf_counter() - t0
    queries.replace_image_predictions(db, drop, current.version, rows)
    return dg.MaterializeResult(
        metadata={
            "model_version": current.version,
            "model_file": path.name,
            "images": len(rows),
            "missing_thumbnails": missing,
            "flagged_biopsy": sum(r[6] for r in rows),
            "flagged_mag": sum(r[7] for r in rows),
            "images_per_s": round(len(rows) / elapsed, 1) if elapsed else 0.0,
        }
    )


@dg.asset(group_name="model", deps=[image_predictions], kinds={"duckdb", "csv"})
def study_predictions(paths: MammoHome, store: StoreResource) -> dg.MaterializeResult:
    """One row per study (flagged if any image is), from the current model's image
    predictions: a CSV and the DuckDB table `study_predictions`."""
    home = paths.data
    current = read_current(home.models)
    if current is None:
        raise dg.Failure("no current model: materialize onnx_model first")
    out = home.study_csv
    n, (biopsy, mag, images) = queries.write_study_predictions(store.store(), current.version, out)
    return dg.MaterializeResult(
        metadata={
            "csv": dg.MetadataValue.path(str(out)),
            "studies": n,
            "images": int(images or 0),
            "studies_with_biopsy_tool": int(biopsy or 0),
            "studies_with_mag_view": int(mag or 0),
            "model_version": current.version,
        }
    )
