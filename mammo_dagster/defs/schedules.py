"""A nightly sweep: any complete drop whose indexed state is stale is processed again."""

import os

import dagster as dg

from mammo_dagster.core.imaging.index import indexed_states

from .partitions import drops
from .resources import MammoHome, StoreResource
from .sensors import due_drops, ingest_job, unknown_drops

SWEEP_CRON = os.environ.get("MAMMO_SWEEP_CRON", "0 2 * * *")


@dg.schedule(
    job=ingest_job, cron_schedule=SWEEP_CRON, default_status=dg.DefaultScheduleStatus.RUNNING
)
def nightly_drop_sweep(
    context: dg.ScheduleEvaluationContext, paths: MammoHome, store: StoreResource
) -> list[dg.RunRequest]:
    """Runs for complete drops not indexed in their current state (missed or changed)."""
    due = due_drops(paths.data, indexed_states(store.store()))
    new = unknown_drops(context.instance, [name for name, _ in due])
    if new:  # a schedule can't request partitions the way a sensor does: add them itself
        context.instance.add_dynamic_partitions(drops.name, new)
    return [dg.RunRequest(run_key=f"sweep:{n}:{fp}", partition_key=n) for n, fp in due]
