"""The pull's ledger in the store: which studies were listed and which instances fetched
(the cursor, so nothing is fetched twice), which pull is unfinished (resumed into the
same drop) and the next ``pacs-YYYYMMDD-NNN`` drop name; and the records it keeps
(`Study`, `Instance`, `Fetched`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from ..home import Home
from ..store.db import Store

DROP_PREFIX = "pacs-"
_DROP_NAME = re.compile(r"^pacs-(\d{8})-(\d{3,})$")


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


@dataclass
class Fetched:
    instance: Instance
    status: str  # ok | error
    error_kind: str | None = None
    error: str | None = None
    nbytes: int = 0
    resumed: bool = False  # on disk already (an earlier, killed pull wrote it)


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
    record_pull(store, name, source, finished=False)
    return name


def record_pull(store: Store, drop: str, source: str, finished: bool) -> None:
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


def record_instances(store: Store, source: str, drop: str, results: list[Fetched]) -> None:
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


def record_studies(store: Store, source: str, studies: list[Study]) -> None:
    rows = [[source, s.uid, s.instances] for s in studies]
    if rows:
        store.run(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO pacs_studies VALUES (?, ?, ?, current_timestamp)", rows
            )
        )
