"""The active-learning loop: labeling_queue, the retrain job and the sensors that turn it.

- `active_learning_sensor`: once N new labels (``$MAMMO_RETRAIN_EVERY``, default 50)
  arrived since the data the current model was trained on, one `retrain` run
  (training_set -> trained_model -> onnx_model -> labeling_queue); never two at once.
- `new_model_sensor`: image_predictions wherever the current model has frames to score
  (a new model, a new or grown drop), then study_predictions once none is pending.
"""

import json
from collections import Counter

import dagster as dg
import numpy as np

from mammo_dagster.core.imaging.batch import thumbnail_name
from mammo_dagster.core.learning.active import Candidate, strategy, uncertainty
from mammo_dagster.core.model.modelstore import current_model_file, read_current
from mammo_dagster.core.model.splits import split_of
from mammo_dagster.core.store import queries
from mammo_dagster.core.store.coverage import DropCoverage, prediction_coverage

from .model import image_predictions, labels, onnx_model, study_predictions, trained_model
from .model import training_set as training_set_asset
from .partitions import drops
from .resources import MammoHome, StoreResource


class QueueConfig(dg.Config):
    strategy: str = "uncertainty"  # uncertainty | random
    size: int = 200
    explore: float = 0.2  # share of random picks beside the uncertain ones
    per_study: int = 2


@dg.asset(group_name="model", deps=[onnx_model, labels], kinds={"duckdb"})
def labeling_queue(
    context: dg.AssetExecutionContext, config: QueueConfig, paths: MammoHome, store: StoreResource
) -> dg.MaterializeResult:
    """Unlabeled images outside the hold-out, ranked for labeling by the current model's
    uncertainty (scoring) and the strategy's picks (selection); the labeler reads it."""
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    home = paths.data
    current, path = current_model_file(home.models)
    db = store.store()
    rows = queries.unlabeled_pool(db, current.version)
    pool = [
        r for r in rows
        if split_of(r[3], r[2]) != "holdout"
        and (home.thumbnails / thumbnail_name(r[0], r[1])).exists()
    ]  # fmt: skip
    missing = [r for r in pool if r[5] is None]
    scored = {(r[0], r[1]): (r[5], r[6]) for r in pool if r[5] is not None}
    if missing:  # images the current model has not scored yet (e.g. a new model)
        probs = OnnxModel(path).thumbnail_probs(
            [home.thumbnails / thumbnail_name(r[0], r[1]) for r in missing]
        )
        for r, p in zip(missing, probs, strict=True):
            scored[(r[0], r[1])] = (float(p[0]), float(p[1]))
    probs = np.array([scored[(r[0], r[1])] for r in pool]).reshape(-1, 2)
    scores = uncertainty(probs) if len(pool) else np.zeros(0)
    candidates = [
        Candidate(r[0], r[1], r[2] or "", r[4], float(s)) for r, s in zip(pool, scores, strict=True)
    ]
    chosen = strategy(config.strategy, explore=config.explore, per_study=config.per_study)
    picks = chosen.select(candidates, config.size, seed=current.label_seq)
    queries.replace_queue(db, [
        (p.candidate.sop_instance_uid, p.candidate.frame, rank, p.candidate.score, p.reason,
         current.version)
        for rank, p in enumerate(picks, start=1)
    ])  # fmt: skip
    queued = [p.candidate.score for p in picks]
    return dg.MaterializeResult(
        metadata={
            "strategy": config.strategy,
            "model_version": current.version,
            "queued": len(picks),
            "unlabeled_pool": len(pool),
            "scored_now": len(missing),
            "mean_uncertainty_queue": float(np.mean(queued)) if queued else 0.0,
            "mean_uncertainty_pool": float(np.mean(scores)) if len(scores) else 0.0,
            "reasons": dg.MetadataValue.json(dict(Counter(p.reason for p in picks))),
            "vendors": dg.MetadataValue.json(
                dict(Counter(p.candidate.manufacturer for p in picks))
            ),
        }
    )


retrain_job = dg.define_asset_job(
    "retrain",
    selection=[training_set_asset, trained_model, onnx_model, labeling_queue],
    description="Learn from the labels: training set, model, ONNX (+checks), new queue.",
    tags={"mammo/job": "retrain"},  # run queues limit retrains by this tag (deploy/)
)
predict_drop_job = dg.define_asset_job("predict_drop", selection=[image_predictions])
study_job = dg.define_asset_job("study_csv", selection=[study_predictions])

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dg.sensor(
    job=retrain_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING
)
def active_learning_sensor(
    context: dg.SensorEvaluationContext, paths: MammoHome, store: StoreResource
) -> dg.SensorResult | dg.SkipReason:
    """One retrain once N new labels arrived since the current model's training data."""
    home = paths.data
    current = read_current(home.models)
    since = current.label_seq if current else 0
    new, newest = queries.new_label_count(store.store(), since)
    every = home.retrain_every
    if new < every:
        return dg.SkipReason(f"{new} new labels since the current model; retrain at {every}")
    running = context.instance.get_run_records(
        dg.RunsFilter(job_name=retrain_job.name, statuses=IN_FLIGHT), limit=1
    )
    if running:
        return dg.SkipReason("a retrain is running; the labels since will count toward the next")
    cursor = json.loads(context.cursor) if context.cursor else {}
    if cursor.get("requested_at_seq") == newest:
        return dg.SkipReason(f"a retrain for labels up to {newest} was already requested")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"retrain-labels-{newest}")],
        cursor=json.dumps({"requested_at_seq": newest, "model_seq": since}),
    )


def _runs_by_key(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, dg.DagsterRun]:
    """The newest run for each of `keys` (run keys), if any."""
    if not keys:
        return {}
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/run_key": keys}))
    runs: dict[str, dg.DagsterRun] = {}
    for record in records:  # newest first
        runs.setdefault(record.dagster_run.tags["dagster/run_key"], record.dagster_run)
    return runs


def _partitions_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Drops that a run (ingest, predict, backfill) is working on right now."""
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT))
    return {p for r in records if (p := r.dagster_run.tags.get("dagster/partition"))}


def predict_run_key(version: str, drop: DropCoverage) -> str:
    """Once per model and indexed state of a drop: a drop that grows is predicted again."""
    state = f":{drop.fingerprint[:8]}" if drop.fingerprint else ""
    return f"{version}:{drop.drop_name}{state}"


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           jobs=[predict_drop_job, study_job])  # fmt: skip
def new_model_sensor(
    context: dg.SensorEvaluationContext, paths: MammoHome, store: StoreResource
) -> dg.SensorResult | dg.SkipReason:
    """Predictions with the current model for every drop that has frames it has not scored
    (a new model, a new or grown drop), then the study CSV once none is pending.

    A drop with nothing to predict (only duplicates or bad files), or whose predict run
    ended without covering every frame (failed, or frames without thumbnails), is reported
    in the skip reason and never holds the CSV back.
    """
    current = read_current(paths.data.models)
    if current is None:
        return dg.SkipReason("no current model yet")
    coverage = prediction_coverage(store.store(), current.version)
    known = set(context.instance.get_dynamic_partitions(drops.name))
    pending = [d for d in coverage if d.drop_name in known and d.unpredicted > 0]
    busy = _partitions_in_flight(context.instance) if pending else set()
    runs = _runs_by_key(context.instance, [predict_run_key(current.version, d) for d in pending])
    requests, waiting, settled = [], [], []
    for d in pending:
        key = predict_run_key(current.version, d)
        if d.drop_name in busy:
            waiting.append(d.drop_name)
        elif key not in runs:
            requests.append(
                dg.RunRequest(run_key=key, partition_key=d.drop_name, job_name="predict_drop")
            )
        else:  # its run for this state ended and left frames unscored
            run = runs[key]
            settled.append(
                f"{d.drop_name} ({d.unpredicted} of {d.frames} frames unscored, "
                f"run {run.run_id[:8]} {run.status.value.lower()})"
            )
    cursor = _cursor(context.cursor)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))
    notes = [f"predictions pending for {', '.join(waiting)} (a run is working on them)"]
    notes = notes if waiting else []
    empty = [d.describe() for d in coverage if d.nothing_to_predict]
    if empty:
        notes.append(f"nothing to predict in {'; '.join(empty)}")
    if settled:
        notes.append(f"incomplete: {'; '.join(settled)}")
    if waiting:
        return dg.SkipReason("; ".join(notes))
    covered = [d for d in coverage if d.predicted]
    if not covered:
        return dg.SkipReason("; ".join(["no predictions to aggregate yet", *notes]))
    images = sum(d.predicted for d in covered)
    key = f"{current.version}:studies:{len(covered)}:{images}"  # again when frames join
    summary = f"{current.version}: {images} images of {len(covered)} drops"
    if cursor.get("studies") == key:
        return dg.SkipReason("; ".join([f"study CSV up to date ({summary})", *notes]))
    for note in notes:
        context.log.warning(note)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=key, job_name="study_csv")],
        cursor=json.dumps(cursor | {"studies": key}),
    )


def _cursor(raw: str | None) -> dict:
    """The sensor's cursor (older versions stored a bare model version: start afresh)."""
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
