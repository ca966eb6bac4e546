"""A nightly sweep: any complete drop whose indexed state is stale is processed again."""

import os

import dagster as dg

from mammo_dagster.core.index import drop_state, indexed_states

from .partitions import drops
from .resources import MammoHome, StoreResource
from .sensors import QUIET_SECONDS, drop_folders, ingest_job

SWEEP_CRON = os.environ.get("MAMMO_SWEEP_CRON", "0 2 * * *")


@dg.schedule(
    job=ingest_job, cron_schedule=SWEEP_CRON, default_status=dg.DefaultScheduleStatus.RUNNING
)
def nightly_drop_sweep(
    context: dg.ScheduleEvaluationContext, paths: MammoHome, store: StoreResource
) -> list[dg.RunRequest]:
    """Runs for complete drops not indexed in their current state (missed or changed)."""
    done = indexed_states(store.store())
    known = set(context.instance.get_dynamic_partitions(drops.name))
    new, runs = [], []
    for name in drop_folders(paths):
        complete, fingerprint, _files = drop_state(paths.incoming / name, QUIET_SECONDS)
        if complete and done.get(name) != fingerprint:
            if name not in known:
                new.append(name)
            runs.append(dg.RunRequest(run_key=f"sweep:{name}:{fingerprint}", partition_key=name))
    if new:  # a schedule can't request partitions the way a sensor does: add them itself
        context.instance.add_dynamic_partitions(drops.name, new)
    return runs
