"""Label events in the store, current labels, undo folding, and `mammo labels import|export`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mammo_dagster.cli import main as mammo
from mammo_dagster.core.model.splits import HOLDOUT_FRACTION, split_of
from mammo_dagster.core.store.db import DB_NAME, Store
from mammo_dagster.core.store.labels import (
    LabelBook,
    LabelEvent,
    LabelFileError,
    append_events,
    import_csv,
    load_events,
)

SOP = "1.2.3.4"


def _store(home: Path) -> Store:
    store = Store(home / DB_NAME)
    store.migrate()
    return store


def _current(store: Store) -> list[tuple]:
    return store.run(
        lambda c: c.execute(
            "SELECT sop_instance_uid, has_biopsy_tool, has_mag_view, annotator "
            "FROM current_labels ORDER BY ALL"
        ).fetchall()
    )


def test_events_are_append_only_and_a_retract_undoes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = LabelEvent(SOP, "label", "ann", "random", has_biopsy_tool=True, has_mag_view=False)
    second = LabelEvent(SOP, "label", "ann", "random", has_biopsy_tool=True, has_mag_view=True)
    assert append_events(store, [first, second]) == 2
    assert append_events(store, [first, second]) == 0  # a replay stores nothing
    assert _current(store) == [(SOP, True, True, "ann")]
    undo = LabelEvent(SOP, "retract", "ann", "random", retracts=second.event_id)
    append_events(store, [undo])
    assert _current(store) == [(SOP, True, False, "ann")]  # the earlier label is back
    events = load_events(store)
    assert [e.action for e in events] == ["label", "label", "retract"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)


def test_label_book_folds_like_the_view(tmp_path: Path) -> None:
    a1 = LabelEvent("1.1", "label", "a", "random", has_biopsy_tool=False, has_mag_view=True)
    b1 = LabelEvent("1.2", "label", "b", "random", has_biopsy_tool=True, has_mag_view=True)
    a2 = LabelEvent("1.3", "skip", "a", "random")
    book = LabelBook([a1, b1, a2])
    assert book.undo_target("a") is a2 and book.undo_depth("a") == 2
    book.add([LabelEvent("1.3", "retract", "a", "random", retracts=a2.event_id)])
    assert book.undo_target("a") is a1 and ("1.3", 0) not in book.last_skip
    book.add([LabelEvent("1.1", "retract", "a", "random", retracts=a1.event_id)])
    assert book.undo_target("a") is None and set(book.current) == {("1.2", 0)}
    assert book.undo_target("b") is b1


def test_events_validate_themselves() -> None:
    with pytest.raises(ValueError, match="both flags"):
        LabelEvent(SOP, "label", "a", "random", has_biopsy_tool=True)
    with pytest.raises(ValueError, match="source"):
        LabelEvent(SOP, "skip", "a", "elsewhere")
    with pytest.raises(ValueError, match="retract"):
        LabelEvent(SOP, "retract", "a", "random")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_import_twice_adds_nothing_and_export_is_one_row_per_image(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    home = tmp_path / "home"
    src = _write(
        tmp_path / "in.csv",
        "sop_instance_uid,has_biopsy_tool,has_mag_view,annotator\n"
        "1.2.3.1,1,0,rad1\n1.2.3.2,yes,true,\n1.2.3.3,0,n,rad2\n",
    )
    assert mammo(["labels", "import", str(src), "--home", str(home)]) == 0
    assert "3 labels added" in capsys.readouterr().out
    assert mammo(["labels", "import", str(src), "--home", str(home)]) == 0
    assert "0 labels added, 3 already so" in capsys.readouterr().out
    store = Store(home / DB_NAME)
    assert len(load_events(store)) == 3
    assert _current(store)[1] == ("1.2.3.2", True, True, "import")  # default annotator

    out = tmp_path / "out.csv"
    assert mammo(["labels", "export", str(out), "--home", str(home)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:4] == ["sop_instance_uid", "has_biopsy_tool", "has_mag_view", "annotator"]
    assert [(r["sop_instance_uid"], r["has_biopsy_tool"], r["has_mag_view"]) for r in rows] == [
        ("1.2.3.1", "1", "0"),
        ("1.2.3.2", "1", "1"),
        ("1.2.3.3", "0", "0"),
    ]
    assert all(r["source"] == "import" for r in rows)

    # a changed file adds only its changed row; the exported file re-imports as a no-op
    changed = _write(tmp_path / "c.csv", out.read_text().replace("1.2.3.3,0,0", "1.2.3.3,1,0"))
    assert import_csv(store, changed).added == 1
    assert import_csv(store, out).added == 1  # back to what `out` says
    assert import_csv(store, out).added == 0
    history = tmp_path / "history.csv"
    assert mammo(["labels", "export", str(history), "--home", str(home), "--history"]) == 0
    assert len(list(csv.DictReader(history.open()))) == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sop_instance_uid,has_biopsy_tool\n1.2,1\n", "missing column"),
        ("sop_instance_uid,has_biopsy_tool,has_mag_view\n1.2,1,maybe\n", "line 2: has_mag_view"),
        ("sop_instance_uid,has_biopsy_tool,has_mag_view\n../x,1,0\n", "line 2: bad sop"),
        ("sop_instance_uid,has_biopsy_tool,has_mag_view\n1.2,1,0\n1.2,0,0\n", "also on line 2"),
    ],
)
def test_a_bad_file_imports_nothing(tmp_path: Path, text: str, message: str) -> None:
    store = _store(tmp_path)
    good = "1.9.9,1,1\n"  # a good row in the same file is not imported either
    path = _write(tmp_path / "bad.csv", text + good if text.count("\n") > 1 else text)
    with pytest.raises(LabelFileError, match=message):
        import_csv(store, path)
    assert load_events(store) == []


def test_cli_reports_a_bad_file_in_one_line(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "bad.csv", "sop_instance_uid,has_biopsy_tool,has_mag_view\n1.2,2,0\n")
    assert mammo(["labels", "import", str(path), "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "line 2: has_biopsy_tool" in err and "nothing imported" in err


def test_splits_are_by_patient_stable_and_near_their_share() -> None:
    keys = [f"patient-{i}" for i in range(4000)]
    splits = [split_of(k) for k in keys]
    assert splits == [split_of(k) for k in keys]
    share = splits.count("holdout") / len(keys)
    assert abs(share - HOLDOUT_FRACTION) < 0.02
    assert split_of(None, "1.2.3") == split_of(None, "1.2.3")
