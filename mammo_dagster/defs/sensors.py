"""New DICOM drops become partitions and get processed without anyone clicking."""

import json
import os

import dagster as dg

from mammo_dagster.core.home import Home
from mammo_dagster.core.imaging.index import drop_state, indexed_states

from .ingest import dicom_index, thumbnails
from .model import image_predictions
from .partitions import drops
from .resources import MammoHome, StoreResource

#: A drop without a `_READY` marker counts as complete once no file changed for this long.
QUIET_SECONDS = float(os.environ.get("MAMMO_DROP_QUIET_SECONDS", "120"))

ingest_job = dg.define_asset_job(
    "ingest_drop",
    selection=[dicom_index, thumbnails],
    description="Index and thumbnail one drop.",
)
process_job = dg.define_asset_job(
    "process_drop",
    selection=[dicom_index, thumbnails, image_predictions],
    partitions_def=drops,
    description="Index, thumbnail and predict one drop with the current model: what a "
    "backfill of many drops runs (in parallel on a Celery cluster, see README Scale-out).",
)


def drop_folders(home: Home) -> list[str]:
    if not home.incoming.is_dir():
        return []
    return sorted(
        p.name for p in home.incoming.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def due_drops(home: Home, processed: dict[str, str]) -> list[tuple[str, str]]:
    """(drop, fingerprint) of complete drops whose content differs from `processed`."""
    due = []
    for name in drop_folders(home):
        complete, fingerprint, _files = drop_state(home.drop(name), QUIET_SECONDS)
        if complete and processed.get(name) != fingerprint:
            due.append((name, fingerprint))
    return due


def unknown_drops(instance: dg.DagsterInstance, names: list[str]) -> list[str]:
    """The drops that have no partition yet."""
    known = set(instance.get_dynamic_partitions(drops.name))
    return [n for n in names if n not in known]


@dg.sensor(
    job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING
)
def dicom_drop_sensor(
    context: dg.SensorEvaluationContext, paths: MammoHome, store: StoreResource
) -> dg.SensorResult:
    """Complete drops (marker, or quiet period) whose content changed since last seen and
    that were not indexed in that state already (by `mammo demo`, a script or the UI)."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    changed = due_drops(paths.data, seen)
    indexed = indexed_states(store.store()) if changed else {}
    due = [(n, fp) for n, fp in changed if indexed.get(n) != fp]
    current = [n for n, fp in changed if indexed.get(n) == fp]
    new = unknown_drops(context.instance, [name for name, _ in due])
    seen.update(changed)
    skip = None
    if not due:
        skip = (f"indexed already in their current state: {', '.join(current)}" if current
                else "no complete drop changed since the last tick")  # fmt: skip
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"{n}:{fp}", partition_key=n) for n, fp in due],
        dynamic_partitions_requests=[drops.build_add_request(new)] if new else [],
        cursor=json.dumps(seen, sort_keys=True),
        skip_reason=skip,
    )
