"""A DICOMweb archive (PACS, VNA, a cloud endpoint) as a drop source, through
`dicomweb-client`.

A pull finds MG studies with QIDO-RS (StudyDate window), lists their instances, and
retrieves each instance not fetched before with WADO-RS (``transfer-syntax=*``: as
stored, no transcoding) into a drop folder ``incoming/pacs-YYYYMMDD-NNN/<study>/
<series>/<sop>.dcm``; from there the folder lineage runs unchanged. Retrieval goes to
files, not a stream: the drop is then an ordinary drop (resumable, re-indexable,
inspectable with the usual tools) and nothing downstream learns a second input path.

Guarantees, as for folder drops:
- resumable: files are written whole (temp file + rename) and a pull that was killed
  (or lost the server) is resumed into the same drop by the next one, which fetches
  only what is missing;
- the cursor is the store's ``pacs_instances`` ledger: an instance fetched once is
  never fetched again (and a study whose instance count has not changed since it was
  listed is not even listed again);
- bounded: at most `workers` requests in flight; transient failures (connection
  errors, 408/429/5xx) are retried with exponential backoff;
- per-instance failures (an HTTP error, a body that is not DICOM) become lines of the
  drop's ``_FETCH_ERRORS.csv`` and so error rows of `dicom_index`; a truncated part is
  written as received and the indexer records it as truncated, like any bad file;
- wrong credentials or an unreachable server fail before any drop folder is made.

Nothing here logs a patient name or ID; credentials never appear in messages.
"""

from __future__ import annotations

import csv
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write
from ..home import Home
from ..imaging.batch import FETCH_ERRORS, READY_MARKER
from ..store.db import Store
from .ledger import (
    Fetched,
    Instance,
    Study,
    fetched,
    listed,
    next_drop_name,
    record_instances,
    record_pull,
    record_studies,
    unfinished_pull,
)
from .source import (
    PacsError,
    PacsSource,
    Retry,
    describe,
    http_status,
    is_connection_error,
    redact,
    with_retries,
)

log = logging.getLogger("mammo.pacs")


_DATE = re.compile(r"^\d{8}$")
#: SR documents (Key Object Selection included): our own write-back, never pulled back.
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."

# DICOM JSON tags
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
SOP_CLASS, STUDY_INSTANCES = "00080016", "00201208"


def _value(item: Mapping, tag: str):
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


#: QIDO page size. Paging is ours, not the client's `get_remaining`: some servers
#: (Orthanc 1.10) ignore `offset` on a short answer, and that loop would never end.
PAGE = 1000


def _pages(search: Callable[..., list], key: str) -> list[Mapping]:
    """Every result of a QIDO `search(offset=, limit=)`, page by page, stopping at a short
    page or at a page with nothing new (a server that ignores the offset)."""
    items: dict[str, Mapping] = {}
    offset = 0
    while True:
        page = search(offset=offset, limit=PAGE)
        new = {_value(i, key): i for i in page if _value(i, key) not in items}
        items.update(new)
        if len(page) < PAGE or not new:
            return list(items.values())
        offset += len(page)


def find_studies(client, since: str | None = None) -> list[Study]:
    """MG studies (QIDO-RS, ModalitiesInStudy=MG), from StudyDate `since` (YYYYMMDD) on."""
    filters = {"ModalitiesInStudy": "MG"}
    if since:
        filters["StudyDate"] = f"{since}-"
    found = _pages(
        lambda **page: client.search_for_studies(
            search_filters=filters, fields=["NumberOfStudyRelatedInstances"], **page
        ),
        STUDY_UID,
    )
    studies = {}
    for item in found:
        uid = _value(item, STUDY_UID)
        if uid:
            n = _value(item, STUDY_INSTANCES)
            studies[uid] = Study(uid, int(n) if n is not None else None)
    return sorted(studies.values(), key=lambda s: s.uid)


def list_instances(client, study: str) -> list[Instance]:
    """The study's instances but SR documents (KOS and SR: what write-back sends)."""
    found = _pages(
        lambda **page: client.search_for_instances(study_instance_uid=study, **page), SOP_UID
    )
    out = {}
    for item in found:
        sop, series = _value(item, SOP_UID), _value(item, SERIES_UID)
        if sop and series and not str(_value(item, SOP_CLASS) or "").startswith(SR_CLASS_PREFIX):
            out[sop] = Instance(study, series, sop)
    return sorted(out.values(), key=lambda i: (i.series, i.sop))


# -- WADO-RS --------------------------------------------------------------------------------


class _Clients(threading.local):
    """One DICOMweb client per worker thread."""

    def __init__(self, source: PacsSource) -> None:
        self.client = source.client()


def fetch_instance(client, instance: Instance, folder: Path, retry: Retry) -> Fetched:
    """Retrieve one instance (as stored: transfer-syntax=*) into `folder`, written whole.
    An HTTP error or a body that is not DICOM is a `Fetched` error; connection errors
    that outlast the retries are raised (the pull stops, a rerun resumes)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = folder / instance.path
    if out.exists():
        return Fetched(instance, "ok", nbytes=out.stat().st_size, resumed=True)

    def get():
        return client.retrieve_instance(
            instance.study, instance.series, instance.sop,
            media_types=(("application/dicom", "*"),),
        )  # fmt: skip

    try:
        ds = with_retries(get, retry)
    except InvalidDicomError as e:
        return Fetched(instance, "error", "not_dicom", f"WADO-RS body is not DICOM: {e}")
    except Exception as e:
        if is_connection_error(e):
            raise
        if (status := http_status(e)) is not None:
            return Fetched(instance, "error", f"http_{status}", f"WADO-RS answered HTTP {status}")
        return Fetched(instance, "error", "bad_response", f"{type(e).__name__}: {e}")
    with atomic_write(out, "wb") as f:  # as received: file meta and transfer syntax kept
        pydicom.dcmwrite(f, ds)
        nbytes = f.tell()
    return Fetched(instance, "ok", nbytes=nbytes)


def _write_fetch_errors(folder: Path, failures: list[Fetched]) -> None:
    """The drop's FETCH_ERRORS file: this pull's failures plus earlier ones still missing."""
    listing = folder / FETCH_ERRORS
    rows: dict[str, dict] = {}
    if listing.is_file():
        with listing.open(newline="") as f:
            rows = {r["path"]: r for r in csv.DictReader(f)}
    for r in failures:
        rows[r.instance.path] = {"path": r.instance.path, "error_kind": r.error_kind,
                                 "error": r.error}  # fmt: skip
    rows = {p: r for p, r in rows.items() if not (folder / p).exists()}
    if not rows and not listing.exists():
        return
    with atomic_write(listing, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "error_kind", "error"])
        w.writeheader()
        w.writerows(rows.values())


# -- a pull ----------------------------------------------------------------------------------


@dataclass
class PullReport:
    drop: str | None
    studies: int = 0  # studies with at least one instance fetched (or tried) by this pull
    instances: int = 0  # instances fetched by this pull (written or found from a killed one)
    failed: int = 0  # instances that became error rows
    bytes: int = 0
    resumed: bool = False  # continued a pull that had not finished
    seconds: float = 0.0
    failures: list[Fetched] = field(default_factory=list, repr=False)


@dataclass
class Plan:
    """What a pull would fetch: new or grown studies and their instances not fetched."""

    source: str
    studies: list[Study]
    todo: dict[str, list[Instance]]  # study -> instances to fetch

    @property
    def instances(self) -> int:
        return sum(map(len, self.todo.values()))


def plan_pull(source: PacsSource, store: Store, since: str | None = None, client=None) -> Plan:
    """QIDO only: studies whose instance count changed since listed, and their instances
    not fetched yet. Raises PacsError on credentials or connection trouble."""
    if since is not None and not _DATE.match(since):
        raise PacsError(f"--since must be YYYYMMDD, got {since!r}")
    client = client or source.client()
    key = redact(source.url)
    try:
        studies = with_retries(lambda: find_studies(client, since), Retry())
    except Exception as e:
        raise describe(e, "searching for MG studies (QIDO-RS)", source) from e
    seen, have = listed(store, key), fetched(store, key)
    changed = [s for s in studies if s.instances is None or seen.get(s.uid) != s.instances]
    todo = {}
    for study in changed:
        try:
            instances = with_retries(lambda s=study: list_instances(client, s.uid), Retry())
        except Exception as e:
            raise describe(e, "listing a study's instances (QIDO-RS)", source) from e
        missing = [i for i in instances if i.sop not in have]
        if missing:
            todo[study.uid] = missing
    return Plan(key, changed, todo)


def pull(
    home: Home,
    source: PacsSource,
    *,
    since: str | None = None,
    drop: str | None = None,
    workers: int = 4,
    store: Store | None = None,
    retry: Retry = Retry(),  # noqa: B008 (frozen)
    progress: Callable[[int], object] | None = None,
    plan: Plan | None = None,
) -> PullReport:
    """Fetch new MG studies from `source` into a drop of `home` (see the module doc):
    `drop` names it, else an unfinished pull's drop is resumed, else the day's next
    ``pacs-YYYYMMDD-NNN``. Nothing new: no drop is made (report.drop is None)."""
    t0 = time.perf_counter()
    if store is None:
        store = Store(home.db)
        store.migrate()
    if workers < 1:
        raise PacsError("workers must be at least 1")
    plan = plan or plan_pull(source, store, since)
    resume = unfinished_pull(store, plan.source)
    if not plan.todo and (resume is None or drop not in (None, resume)):
        record_studies(store, plan.source, plan.studies)
        return PullReport(None, seconds=time.perf_counter() - t0)
    name = drop or resume or next_drop_name(home, store)
    folder = home.drop(name)
    folder.mkdir(parents=True, exist_ok=True)
    record_pull(store, name, plan.source, finished=False)
    report = PullReport(name, resumed=name == resume)
    jobs = [i for instances in plan.todo.values() for i in instances]
    clients = _Clients(source)
    done: list[Fetched] = []
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wado") as pool:
            futures = [
                pool.submit(lambda i: fetch_instance(clients.client, i, folder, retry), i)
                for i in jobs
            ]
            try:
                for fut in as_completed(futures):
                    r = fut.result()
                    done.append(r)
                    if len(done) % 32 == 0:  # the ledger keeps up: a kill loses little
                        record_instances(store, plan.source, name, done[-32:])
                    if progress:
                        progress(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    except Exception as e:
        record_instances(store, plan.source, name, done[len(done) - len(done) % 32 :])
        if is_connection_error(e):
            raise PacsError(
                f"lost {redact(source.url)} during the pull ({type(e).__name__}); "
                f"{len(done)} of {len(jobs)} instances are in drop {name}: rerun to resume"
            ) from e
        raise
    record_instances(store, plan.source, name, done[len(done) - len(done) % 32 :])
    failures = [r for r in done if r.status == "error"]
    _write_fetch_errors(folder, failures)
    # a study with a failed instance is listed again next time (its failures retried)
    retry_studies = {r.instance.study for r in failures}
    record_studies(store, plan.source, [s for s in plan.studies if s.uid not in retry_studies])
    (folder / READY_MARKER).touch()
    record_pull(store, name, plan.source, finished=True)
    report.studies = len({r.instance.study for r in done})
    report.instances = sum(r.status == "ok" for r in done)
    report.failed = len(failures)
    report.bytes = sum(r.nbytes for r in done)
    report.failures = failures
    report.seconds = time.perf_counter() - t0
    for r in failures:  # UIDs and HTTP codes only
        log.warning("instance %s not fetched: %s", r.instance.sop, r.error)
    return report
