"""Run the Dagster assets in-process (the demo, scripts), against the instance `make dev` shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from .core.home import Home
from .defs.ingest import dicom_index, thumbnails
from .defs.partitions import drops
from .defs.resources import resources_for

INGEST = [dicom_index, thumbnails]  # their checks run inside their steps


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def open_instance(dagster_home: Path) -> dg.DagsterInstance:
    """The Dagster instance under `dagster_home` (created with the project's settings,
    as `make dev` installs them, when there is none yet)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        project = Path(__file__).resolve().parent.parent / "dagster.yaml"
        config.write_text(
            project.read_text() if project.exists() else "telemetry:\n  enabled: false\n"
        )
    return dg.DagsterInstance.from_config(str(dagster_home))


def materialize_ingest(
    home: Home | Path, drop: str, *, size: int, workers: int, dagster_home: Path
) -> dg.ExecuteInProcessResult:
    """Materialize dicom_index and thumbnails (with their checks) for one drop partition.

    Runs are recorded in the SQLite instance under `dagster_home`, so the Dagster UI
    started with the same DAGSTER_HOME shows them.
    """
    with open_instance(dagster_home) as instance:
        if drop not in instance.get_dynamic_partitions(drops.name):
            instance.add_dynamic_partitions(drops.name, [drop])
        return dg.materialize(
            INGEST,
            partition_key=drop,
            instance=instance,
            resources=resources_for(home),
            run_config={
                "ops": {
                    "dicom_index": {"config": {"workers": workers}},
                    "thumbnails": {"config": {"size": size, "workers": workers}},
                },
                **QUIET,
            },
            raise_on_error=False,
        )


def train_and_predict(
    home: Home | Path, drops_: list[str], *, dagster_home: Path, training: dict | None = None
) -> tuple[dg.ExecuteInProcessResult, dg.ExecuteInProcessResult]:
    """Materialize training_set -> trained_model -> onnx_model, then image_predictions for
    each drop and study_predictions (the retrain a labeler's new labels call for)."""
    from .defs.model import (
        image_predictions,
        labels,
        onnx_model,
        study_predictions,
        trained_model,
        training_set,
    )

    resources = resources_for(home)
    with open_instance(dagster_home) as instance:
        model = dg.materialize(
            [labels, training_set, trained_model, onnx_model],
            instance=instance,
            resources=resources,
            selection=["training_set", "trained_model", "onnx_model"],
            run_config={"ops": {"trained_model": {"config": training or {}}}} | QUIET,
            raise_on_error=False,
        )
        if not model.success:
            return model, model
        for drop in drops_:
            if drop not in instance.get_dynamic_partitions(drops.name):
                instance.add_dynamic_partitions(drops.name, [drop])
            done = dg.materialize(
                [image_predictions],
                instance=instance,
                resources=resources,
                partition_key=drop,
                run_config=QUIET,
                raise_on_error=False,
            )
            if not done.success:
                return model, done
        studies = dg.materialize(
            [study_predictions], instance=instance, resources=resources, run_config=QUIET,
            raise_on_error=False,
        )  # fmt: skip
        return model, studies


@dataclass
class LoopRun:
    """One run a sensor requested and this process ran."""

    sensor: str
    run_key: str
    job: str
    partition: str | None
    result: dg.ExecuteInProcessResult

    @property
    def success(self) -> bool:
        return self.result.success


def turn_loop(
    home: Home | Path,
    *,
    dagster_home: Path,
    training: dict | None = None,
    cursor: str | None = None,
) -> tuple[list[LoopRun], str | None, str | None]:
    """One turn of the active-learning loop as the daemon would drive it, in this process:
    tick `active_learning_sensor`; run the retrain it requests; then tick
    `new_model_sensor` until it has nothing new (predictions per drop, the study CSV).

    Returns (runs, the active-learning sensor's new cursor, its skip reason if it skipped).
    """
    from .defs import active, model

    resources = resources_for(home)
    definitions = dg.Definitions(
        assets=[
            model.labels, model.training_set, model.trained_model, model.onnx_model,
            model.image_predictions, model.study_predictions, active.labeling_queue,
        ],
        jobs=[active.retrain_job, active.predict_drop_job, active.study_job],
        resources=resources,
    )  # fmt: skip
    config = {"ops": {"trained_model": {"config": training or {}}}} | QUIET
    runs: list[LoopRun] = []
    with open_instance(dagster_home) as instance:

        def execute(sensor: str, request: dg.RunRequest, job: str) -> LoopRun:
            tags = {"dagster/run_key": request.run_key or "", "dagster/sensor_name": sensor}
            result = definitions.resolve_job_def(job).execute_in_process(
                run_config=config if job == active.retrain_job.name else QUIET,
                instance=instance,
                partition_key=request.partition_key,
                tags=tags,
                raise_on_error=False,
            )
            runs.append(LoopRun(sensor, request.run_key or "", job, request.partition_key, result))
            return runs[-1]

        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        tick = active.active_learning_sensor(ctx)
        if isinstance(tick, dg.SkipReason):
            return runs, cursor, tick.skip_message
        cursor = tick.cursor
        for request in tick.run_requests or []:
            if not execute("active_learning_sensor", request, active.retrain_job.name).success:
                return runs, cursor, None
        done: set[str] = set()
        model_cursor = None
        while True:
            ctx = dg.build_sensor_context(
                instance=instance, cursor=model_cursor, resources=resources
            )
            tick = active.new_model_sensor(ctx)
            if not isinstance(tick, dg.SkipReason):
                model_cursor = tick.cursor
            todo = [] if isinstance(tick, dg.SkipReason) else tick.run_requests or []
            todo = [r for r in todo if r.run_key not in done]
            if not todo:
                return runs, cursor, None
            for request in todo:
                done.add(request.run_key or "")
                if not execute("new_model_sensor", request, request.job_name or "").success:
                    return runs, cursor, None
