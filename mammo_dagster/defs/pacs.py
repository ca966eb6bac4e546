"""A PACS in the lineage: `pacs_sensor` turns new MG studies into drops (`pacs_studies`
retrieves them, then the folder lineage runs unchanged), and `pacs_flags` writes the
current model's flags back as DICOM. Both are off until asked for: the sensor starts
stopped, and nothing materializes `pacs_flags` but a person (or a job they add)."""

import dagster as dg

from mammo_dagster.core.pacs.ledger import reserve_drop, unfinished_pull
from mammo_dagster.core.pacs.pull import plan_pull, pull
from mammo_dagster.core.pacs.push import push
from mammo_dagster.core.pacs.source import ENV_URL, PacsError, PacsSource, redact

from .ingest import dicom_index, thumbnails
from .model import study_predictions
from .partitions import drops
from .resources import MammoHome, PacsResource, StoreResource


class PullConfig(dg.Config):
    workers: int = 4  # WADO-RS requests in flight


@dg.asset(partitions_def=drops, group_name="ingest", kinds={"dicomweb"})
def pacs_studies(
    context: dg.AssetExecutionContext,
    config: PullConfig,
    paths: MammoHome,
    store: StoreResource,
    pacs: PacsResource,
) -> dg.MaterializeResult:
    """The drop's instances retrieved (WADO-RS) from the DICOMweb source into its folder:
    only drops the PACS sensor made; resumable, each instance fetched once."""
    try:
        report = pull(paths.data, pacs.source(), drop=context.partition_key, since=pacs.since,
                      workers=config.workers, store=store.store())  # fmt: skip
    except PacsError as e:
        raise dg.Failure(str(e)) from e
    return dg.MaterializeResult(
        metadata={
            "source": redact(pacs.source().url),
            "studies": report.studies,
            "instances": report.instances,
            "failed": report.failed,
            "megabytes": round(report.bytes / 2**20, 1),
            "resumed": report.resumed,
            "instances_per_s": round(report.instances / report.seconds, 1)
            if report.seconds
            else 0.0,
        }
    )


pacs_job = dg.define_asset_job(
    "pacs_ingest_drop",
    selection=[pacs_studies, dicom_index, thumbnails],
    description="Retrieve one PACS drop, then index and thumbnail it.",
)


@dg.sensor(
    job=pacs_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED
)
def pacs_sensor(
    context: dg.SensorEvaluationContext, paths: MammoHome, store: StoreResource, pacs: PacsResource
) -> dg.SensorResult | dg.SkipReason:
    """New MG studies on the DICOMweb source (QIDO-RS, StudyDate within the resource's
    `lookback_days`; the store's ledger is the cursor) become a drop ``pacs-YYYYMMDD-NNN``
    and a run that retrieves and ingests it. Off by default: turn it on once
    ``$MAMMO_DICOMWEB_URL`` (or the resource's url) is set."""
    if not pacs.configured:
        return dg.SkipReason(f"no DICOMweb source: set {ENV_URL}")
    db = store.store()
    source = pacs.source()
    key = redact(source.url)
    if waiting := unfinished_pull(db, key):
        return dg.SkipReason(
            f"the pull into {waiting} has not finished: re-execute that partition "
            "(or run `mammo pacs pull`) to complete it"
        )
    try:
        plan = plan_pull(source, db, pacs.since)
    except PacsError as e:
        return dg.SkipReason(str(e))
    if not plan.todo:
        return dg.SkipReason(f"no new MG instances on {key}")
    name = reserve_drop(paths.data, db, key)  # the run's pull fills this drop
    context.log.info(f"{len(plan.todo)} studies, {plan.instances} instances -> {name}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=name, partition_key=name)],
        dynamic_partitions_requests=[drops.build_add_request([name])],
        cursor=name,
    )


class PushConfig(dg.Config):
    url: str = ""  # STOW-RS destination (default: the pacs resource's source)
    dry_run: str = ""  # a folder: write the documents there instead of sending


PACS_FLAGS_CHECKS = [
    dg.AssetCheckSpec(
        "every_flagged_study_written_back",
        asset="pacs_flags",
        description="No flagged, fully classified study failed to build or send.",
    )
]


@dg.asset(
    group_name="model",
    deps=[study_predictions],
    kinds={"dicomweb"},
    check_specs=PACS_FLAGS_CHECKS,
)
def pacs_flags(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    paths: MammoHome,
    store: StoreResource,
    pacs: PacsResource,
) -> dg.MaterializeResult:
    """Key Object Selection ("Of Interest") + Comprehensive SR for each flagged study whose
    images were all classified, sent with STOW-RS (or written to `dry_run`); a rerun sends
    nothing new. Never materialized by a sensor or schedule: write-back is a decision."""
    from pathlib import Path

    try:
        if config.dry_run:
            report = push(paths.data, folder=Path(config.dry_run), store=store.store())
        else:
            source = PacsSource.from_env(config.url) if config.url else pacs.source()
            report = push(paths.data, source=source, store=store.store())
    except PacsError as e:
        raise dg.Failure(str(e)) from e
    for line in report.errors:
        context.log.warning(line)
    return dg.MaterializeResult(
        metadata={
            "destination": report.destination,
            "model_version": report.model_version,
            "sent": report.sent,
            "documents": report.objects,
            "skipped": report.skipped_total,
            "skipped_why": dg.MetadataValue.json(dict(report.skipped)),
            "failed": report.failed,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="every_flagged_study_written_back",
                passed=report.failed == 0,
                metadata={"failed": report.failed, "sent": report.sent},
            )
        ],
    )
