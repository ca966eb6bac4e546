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
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..files import atomic_write
from ..home import Home
from ..imaging.batch import FETCH_ERRORS, READY_MARKER
from ..store.db import Store

log = logging.getLogger("mammo.pacs")

ENV_URL = "MAMMO_DICOMWEB_URL"
ENV_TOKEN = "MAMMO_DICOMWEB_TOKEN"
ENV_USER = "MAMMO_DICOMWEB_USER"
ENV_PASSWORD = "MAMMO_DICOMWEB_PASSWORD"
ENV_VERIFY = "MAMMO_DICOMWEB_VERIFY"  # "false" / "0" turns TLS verification off
ENV_CA_BUNDLE = "MAMMO_DICOMWEB_CA_BUNDLE"  # a PEM file of the site's CAs

DROP_PREFIX = "pacs-"
_DROP_NAME = re.compile(r"^pacs-(\d{8})-(\d{3,})$")
_DATE = re.compile(r"^\d{8}$")
#: SR documents (Key Object Selection included): our own write-back, never pulled back.
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# DICOM JSON tags
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
SOP_CLASS, STUDY_INSTANCES = "00080016", "00201208"


class PacsError(Exception):
    """A pull or push that cannot go on (configuration, credentials, server gone): one
    line for the user, never a credential or a patient identifier in it."""


@dataclass(frozen=True)
class PacsSource:
    """Where a DICOMweb service is and how to authenticate: none, basic (user and
    password) or a bearer token. TLS is verified unless `verify` is false, against
    `ca_bundle` when given."""

    url: str
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    verify: bool = True
    ca_bundle: str | None = None
    timeout: float = 60.0

    @classmethod
    def from_env(cls, url: str | None = None, environ: Mapping[str, str] = os.environ):
        """The source the environment configures (`url` overrides ``$MAMMO_DICOMWEB_URL``).
        Raises PacsError when there is no URL or the settings contradict each other."""
        url = url or environ.get(ENV_URL)
        if not url:
            raise PacsError(f"no DICOMweb source: set {ENV_URL} or pass --url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError(f"{ENV_URL} must be an http(s) URL, got {redact(url)!r}")
        if parts.username or parts.password:
            raise PacsError(
                f"put credentials in {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}, not in the URL"
            )
        token, user = environ.get(ENV_TOKEN) or None, environ.get(ENV_USER) or None
        password = environ.get(ENV_PASSWORD) or None
        if token and user:
            raise PacsError(f"set either {ENV_TOKEN} or {ENV_USER}/{ENV_PASSWORD}, not both")
        if user and password is None:
            raise PacsError(f"{ENV_USER} is set but {ENV_PASSWORD} is not")
        verify = environ.get(ENV_VERIFY, "true").strip().lower() not in ("0", "false", "no")
        ca = environ.get(ENV_CA_BUNDLE) or None
        if ca and not Path(ca).is_file():
            raise PacsError(f"{ENV_CA_BUNDLE}: no such file {ca}")
        return cls(url.rstrip("/"), token, user, password, verify, ca)

    @property
    def auth(self) -> str:
        return "bearer" if self.token else "basic" if self.user else "none"

    def session(self):
        """A requests session with this source's auth and TLS settings."""
        import requests

        s = requests.Session()
        s.verify = self.ca_bundle or self.verify
        if self.token:
            s.headers["Authorization"] = f"Bearer {self.token}"
        elif self.user:
            s.auth = (self.user, self.password or "")
        return s

    def client(self):
        """A `dicomweb_client.DICOMwebClient`; its own retries are off (ours are explicit:
        `with_retries`). One per thread: a requests session is not thread-safe."""
        from dicomweb_client import DICOMwebClient

        c = DICOMwebClient(self.url, session=self.session(), timeout=(10, self.timeout))
        c.set_http_retry_params(retry=False)
        return c


def redact(url: str) -> str:
    """`url` without user info or query (what may appear in logs and tables)."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path.rstrip("/"), "", ""))


# -- errors and retries ---------------------------------------------------------------


def http_status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def is_connection_error(e: BaseException) -> bool:
    import requests

    return isinstance(e, requests.ConnectionError | requests.Timeout)


def is_transient(e: BaseException) -> bool:
    """Worth another try: the server is unreachable or slow, or says so (408/429/5xx)."""
    return is_connection_error(e) or http_status(e) in RETRY_STATUS


@dataclass(frozen=True)
class Retry:
    """Exponential backoff: `attempts` tries, waiting `base_s`, 2×, 4×... (capped)."""

    attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 8.0

    def waits(self) -> Iterable[float]:
        return (min(self.cap_s, self.base_s * 2**k) for k in range(self.attempts - 1))


def with_retries(call: Callable, retry: Retry, sleep: Callable[[float], None] = time.sleep):
    """`call()`, tried again after each transient failure (`is_transient`) until
    `retry.attempts` tries are spent; the last failure is raised."""
    for wait in retry.waits():
        try:
            return call()
        except Exception as e:
            if not is_transient(e):
                raise
            sleep(wait)
    return call()


def describe(e: BaseException, what: str, source: PacsSource) -> PacsError:
    """A one-line PacsError for a failure talking to `source` (no credentials)."""
    status = http_status(e)
    where = redact(source.url)
    if status in (401, 403):
        return PacsError(
            f"{where} refused the credentials (HTTP {status}, auth: {source.auth}) "
            f"while {what}: check {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}"
        )
    if status is not None:
        return PacsError(f"{where} answered HTTP {status} while {what}")
    if is_connection_error(e):
        return PacsError(f"cannot reach {where} while {what} ({type(e).__name__})")
    return PacsError(f"{where}: {what} failed: {type(e).__name__}: {e}")


# -- QIDO-RS ------------------------------------------------------------------------------


def _value(item: Mapping, tag: str):
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


@dataclass(frozen=True)
class Study:
    uid: str
    instances: int | None  # NumberOfStudyRelatedInstances, when the server says


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str

    @property
    def path(self) -> str:
        """Where it goes in the drop: UIDs only, never a name or an ID."""
        return f"{self.study}/{self.series}/{self.sop}.dcm"


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


# -- the ledger (cursor) -------------------------------------------------------------------


def fetched(store: Store, source: str) -> set[str]:
    """SOP UIDs fetched from `source` (status ok)."""
    rows = store.query(
        "SELECT sop_instance_uid FROM pacs_instances WHERE source = ? AND status = 'ok'",
        [source],
    )
    return {sop for (sop,) in rows}


def listed(store: Store, source: str) -> dict[str, int | None]:
    """study UID -> instance count when it was last listed."""
    return dict(
        store.query(
            "SELECT study_instance_uid, instances_seen FROM pacs_studies WHERE source = ?",
            [source],
        )
    )


def unfinished_pull(store: Store, source: str) -> str | None:
    """The drop of a pull from `source` that did not finish (killed, server lost)."""
    row = store.one(
        "SELECT drop_name FROM pacs_pulls WHERE source = ? AND finished_at IS NULL "
        "ORDER BY started_at LIMIT 1",
        [source],
    )
    return row[0] if row else None


def next_drop_name(home: Home, store: Store, day: date | None = None) -> str:
    """``pacs-YYYYMMDD-NNN``: the day's next number, past every folder and pull so named."""
    stamp = (day or date.today()).strftime("%Y%m%d")
    names = {r[0] for r in store.query("SELECT drop_name FROM pacs_pulls")}
    if home.incoming.is_dir():
        names |= {p.name for p in home.incoming.iterdir()}
    taken = [int(m[2]) for n in names if (m := _DROP_NAME.match(n)) and m[1] == stamp]
    return f"{DROP_PREFIX}{stamp}-{max(taken, default=0) + 1:03d}"


def reserve_drop(home: Home, store: Store, source: str) -> str:
    """The day's next drop name, recorded as an unfinished pull from `source` (the PACS
    sensor reserves it; the run's pull resumes into it)."""
    name = next_drop_name(home, store)
    _record_pull(store, name, source, finished=False)
    return name


def _record_pull(store: Store, drop: str, source: str, finished: bool) -> None:
    if finished:
        sql = "UPDATE pacs_pulls SET finished_at = current_timestamp WHERE drop_name = ?"
        store.run(lambda c: c.execute(sql, [drop]))
    else:
        store.run(
            lambda c: c.execute(
                "INSERT INTO pacs_pulls VALUES (?, ?, current_timestamp, NULL) "
                "ON CONFLICT (drop_name) DO UPDATE SET finished_at = NULL",
                [drop, source],
            )
        )


def _record_instances(store: Store, source: str, drop: str, results: list[Fetched]) -> None:
    rows = [
        [source, r.instance.sop, r.instance.study, r.instance.series, drop, r.instance.path,
         r.status, r.error_kind, r.error]
        for r in results
    ]  # fmt: skip
    if rows:
        store.run(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO pacs_instances VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)",
                rows,
            )
        )


def _record_studies(store: Store, source: str, studies: list[Study]) -> None:
    rows = [[source, s.uid, s.instances] for s in studies]
    if rows:
        store.run(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO pacs_studies VALUES (?, ?, ?, current_timestamp)", rows
            )
        )


# -- WADO-RS --------------------------------------------------------------------------------


@dataclass
class Fetched:
    instance: Instance
    status: str  # ok | error
    error_kind: str | None = None
    error: str | None = None
    nbytes: int = 0
    resumed: bool = False  # on disk already (an earlier, killed pull wrote it)


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
        _record_studies(store, plan.source, plan.studies)
        return PullReport(None, seconds=time.perf_counter() - t0)
    name = drop or resume or next_drop_name(home, store)
    folder = home.drop(name)
    folder.mkdir(parents=True, exist_ok=True)
    _record_pull(store, name, plan.source, finished=False)
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
                        _record_instances(store, plan.source, name, done[-32:])
                    if progress:
                        progress(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    except Exception as e:
        _record_instances(store, plan.source, name, done[len(done) - len(done) % 32 :])
        if is_connection_error(e):
            raise PacsError(
                f"lost {redact(source.url)} during the pull ({type(e).__name__}); "
                f"{len(done)} of {len(jobs)} instances are in drop {name}: rerun to resume"
            ) from e
        raise
    _record_instances(store, plan.source, name, done[len(done) - len(done) % 32 :])
    failures = [r for r in done if r.status == "error"]
    _write_fetch_errors(folder, failures)
    # a study with a failed instance is listed again next time (its failures retried)
    retry_studies = {r.instance.study for r in failures}
    _record_studies(store, plan.source, [s for s in plan.studies if s.uid not in retry_studies])
    (folder / READY_MARKER).touch()
    _record_pull(store, name, plan.source, finished=True)
    report.studies = len({r.instance.study for r in done})
    report.instances = sum(r.status == "ok" for r in done)
    report.failed = len(failures)
    report.bytes = sum(r.nbytes for r in done)
    report.failures = failures
    report.seconds = time.perf_counter() - t0
    for r in failures:  # UIDs and HTTP codes only
        log.warning("instance %s not fetched: %s", r.instance.sop, r.error)
    return report
