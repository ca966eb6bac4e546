"""The labeler's routes through the test client: keys, undo, skip, leases, hold-out, auth,
path traversal, and labels surviving a database locked by another process."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from labeler.app import create_app
from labeler.cli import run as run_cli
from labeler.state import LabelerState, Settings
from mammo_dagster.core.imaging.display import VIEWING_LUT, WINDOW_TOP
from mammo_dagster.core.store.db import DB_NAME, Store
from mammo_dagster.core.store.labels import KEYS, LabelEvent, load_events
from tests.factory import fake_model, labeled_home


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("labeler_template") / "home"
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the autouse fixture
        mp.setenv("MAMMO_HOME", str(home))
        mp.setenv("MAMMO_PATIENT_SALT", "test-salt")
        images = labeled_home(home, studies=10, seed=3)
    (home.parent / "patients.json").write_text(json.dumps(sorted({i.patient_id for i in images})))
    return home


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "home"
    shutil.copytree(template, dest)
    return dest


def _client(home: Path, **kw) -> tuple[TestClient, LabelerState]:
    settings = Settings(home=home, refresh_s=3600, **kw)
    state = LabelerState(settings)  # no refresh thread: tests call refresh() themselves
    return TestClient(create_app(settings, state), base_url="http://127.0.0.1"), state


@pytest.fixture
def client(home: Path):
    c, state = _client(home)
    c.post("/annotator", data={"annotator": "alice"})
    yield c
    state.close()


def _state(c: TestClient) -> LabelerState:
    return c.app.state.labeler


def _stored(c: TestClient) -> list[LabelEvent]:
    state = _state(c)
    assert state.writer.wait_stored(30)
    return load_events(state.store)


def _next(c: TestClient, n: int = 1, who: str | None = None, have=()) -> list[dict]:
    body = {"n": n, "have": list(have)} | ({"annotator": who} if who else {})
    r = c.post("/api/next", json=body)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _label(c: TestClient, image_id: str, key: str, who: str | None = None, **kw) -> dict:
    body = {"id": image_id, "key": key} | ({"annotator": who} if who else {}) | kw
    r = c.post("/api/label", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_each_key_labels_and_advances(client: TestClient) -> None:
    given = {}
    for key in ("1", "2", "3", "4"):
        item = _next(client)[0]
        assert item["id"] not in given  # a labeled image is not served again
        _label(client, item["id"], key)
        given[item["id"]] = key
    skipped = _next(client)[0]["id"]
    _label(client, skipped, "s")
    events = _stored(client)
    assert [e.action for e in events] == ["label"] * 4 + ["skip"]
    for e in events[:4]:
        assert (e.has_biopsy_tool, e.has_mag_view) == KEYS[given[f"{e.sop_instance_uid}_0"]]
        assert e.annotator == "alice" and e.source in ("random", "holdout", "queue")
    current = _state(client).store.run(
        lambda c: c.execute("SELECT count(*) FROM current_labels").fetchone()[0]
    )
    assert current == 4
    stats = client.get("/api/stats").json()
    assert stats["labeled"] == 4 and stats["mine"] == 4 and stats["until_retrain"] == 46


def test_bad_requests_are_refused_and_store_nothing(client: TestClient) -> None:
    item = _next(client)[0]
    assert client.post("/api/label", json={"id": item["id"], "key": "7"}).status_code == 400
    assert client.post("/api/label", json={"id": "1.2.3_0", "key": "1"}).status_code == 404
    assert client.post("/api/label", json={"id": item["id"]}).status_code == 400
    assert client.get("/api/label").status_code in (404, 405)  # mutations are POST only
    assert _stored(client) == []


def test_same_event_id_is_stored_once(client: TestClient) -> None:
    item = _next(client)[0]
    for _ in range(3):  # the browser retries a POST whose answer it lost
        _label(client, item["id"], "2", event_id="retry-0123456789")
    events = _stored(client)
    assert len(events) == 1 and events[0].event_id == "retry-0123456789"


def test_undo_is_multi_level_per_annotator_and_brings_images_back(client: TestClient) -> None:
    mine = []
    for key in ("1", "2", "4"):
        image_id = _next(client)[0]["id"]
        _label(client, image_id, key)
        mine.append(image_id)
    other = _next(client, who="bob")[0]["id"]
    _label(client, other, "3", who="bob")
    back = [client.post("/api/undo", json={}).json()["item"]["id"] for _ in range(3)]
    assert back == mine[::-1]
    assert client.post("/api/undo", json={}).json()["item"] is None  # nothing left to undo
    assert _next(client)[0]["id"] == mine[0]  # the undone image is shown again first
    events = _stored(client)
    assert sum(e.action == "retract" for e in events) == 3
    current = _state(client).store.run(
        lambda c: c.execute("SELECT sop_instance_uid, annotator FROM current_labels").fetchall()
    )
    assert current == [(other.rsplit("_", 1)[0], "bob")]  # bob's label is untouched


def test_skipped_images_come_back_only_after_the_rest(client: TestClient) -> None:
    state = _state(client)
    skipped = _next(client)[0]["id"]
    _label(client, skipped, "s")
    seen = []
    for _ in range(len(state.images) - 1):
        item = _next(client)[0]
        assert item["id"] != skipped
        seen.append(item["id"])
        _label(client, item["id"], "3")
    assert _next(client)[0]["id"] == skipped
    assert len(set(seen)) == len(state.images) - 1


def test_two_annotators_are_never_served_the_same_image(client: TestClient) -> None:
    a = {i["id"] for i in _next(client, n=4, who="alice")}
    b = {i["id"] for i in _next(client, n=4, who="bob")}
    assert len(a) == 4 and len(b) == 4 and not a & b
    state = _state(client)
    for image_id in a:  # alice walks away: her leases run out
        state.leases[image_id].until = time.time() - 1
    c = {i["id"] for i in _next(client, n=8, who="carol")}
    assert a <= c and not b & c
    a2 = {i["id"] for i in _next(client, n=4, who="alice", have=sorted(a))}
    assert not a2 & (b | c)


def test_a_share_of_labels_goes_to_the_holdout(client: TestClient) -> None:
    state = _state(client)
    holdout = {i for i, im in state.images.items() if im.holdout}
    assert 3 <= len(holdout) < len(state.images) // 2  # the template has hold-out patients
    for _ in range(20):
        _label(client, _next(client)[0]["id"], "3")
    events = _stored(client)
    sources = [e.source for e in events]
    held = sum(f"{e.sop_instance_uid}_{e.frame}" in holdout for e in events)
    assert held == sources.count("holdout")
    assert 2 <= held <= round(20 * state.settings.holdout_share) + 1


def test_the_ui_never_shows_patient_ids_or_the_split(client: TestClient, template: Path) -> None:
    page = client.get("/").text
    items = _next(client, n=20)
    text = page + json.dumps(items) + client.get("/api/stats").text
    patients = json.loads((template.parent / "patients.json").read_text())
    assert patients and not any(p in text for p in patients)
    assert "holdout" not in text.lower() and "hold-out" not in text.lower()
    studies = _state(client).store.run(
        lambda c: c.execute(
            "SELECT DISTINCT study_instance_uid FROM dicom_index "
            "WHERE study_instance_uid IS NOT NULL"
        ).fetchall()
    )
    assert not any(s in text for (s,) in studies)
    assert 'id="stage"' in page and "Biopsy tool" in page


def test_annotator_is_asked_once_and_remembered(home: Path) -> None:
    c, state = _client(home)
    try:
        assert "Who is labeling?" in c.get("/").text
        assert c.post("/api/next", json={"n": 1}).status_code == 400
        assert c.post("/annotator", data={"annotator": "<script>"}).status_code == 400
        c.post("/annotator", data={"annotator": "dana"})
        assert "dana" in c.get("/").text and 'id="stage"' in c.get("/").text
        assert _next(c)  # the cookie names the annotator
    finally:
        state.close()


@pytest.mark.parametrize(
    "url",
    [
        "/mammo.duckdb",
        "/../mammo.duckdb",
        "/%2e%2e/mammo.duckdb",
        "/labeler/.sesskey",
        "/thumbnails/x.png",
        "/img?id=../mammo.duckdb",
        "/img?id=..%2F..%2Fmammo.duckdb",
        "/img?id=/etc/passwd",
        "/assets/labeler.js",
        "/labels.csv",
    ],
)
def test_no_file_is_reachable_by_path(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 404
    assert b"DUCK" not in r.content


def test_images_are_served_by_id(client: TestClient) -> None:
    item = _next(client)[0]
    r = client.get(item["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")


def test_a_person_is_shown_the_radiologists_rendering_not_the_models(
    client: TestClient, home: Path
) -> None:
    """The stored thumbnail is the model's (window up to WINDOW_TOP, headroom above);
    the labeler serves the window over 0..255 and the headroom white."""
    headroom = 0
    for item in _next(client, 12):
        with Image.open(_state(client).thumbnail(item["id"])) as im:
            model = np.asarray(im.convert("L"))
        with Image.open(io.BytesIO(client.get(item["url"]).content)) as im:
            shown = np.asarray(im)
        assert np.array_equal(shown, VIEWING_LUT[model])
        if model.max() > WINDOW_TOP:  # metal (or dense tissue) in the headroom: white
            headroom += 1
            assert (shown[model >= WINDOW_TOP] == 255).all()
        else:
            assert shown.max() > model.max()  # the window stretched over 0..255
    assert headroom  # the synthetic archive has markers: some image used the headroom


def test_token_guards_everything_when_set(home: Path) -> None:
    token = "correct-horse-battery"
    c, state = _client(home, token=token, annotator="erin")
    try:
        r = c.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert c.post("/api/next", json={"n": 1}).status_code == 401
        assert c.get("/img?id=x", follow_redirects=False).status_code in (303, 401)
        assert c.get("/api/labels.csv", follow_redirects=False).status_code != 200
        bearer = {"Authorization": f"Bearer {token}"}
        assert c.post("/api/next", json={"n": 1}, headers=bearer).status_code == 200
        bad = c.post("/login", data={"token": "wrong"}, follow_redirects=False)
        assert bad.headers["location"].startswith("/login")
        assert c.post("/api/next", json={"n": 1}).status_code == 401
        c.post("/login", data={"token": token})
        assert c.post("/api/next", json={"n": 1}).status_code == 200
    finally:
        state.close()


def test_no_token_no_network(capsys: pytest.CaptureFixture, home: Path) -> None:
    args = argparse.Namespace(host="0.0.0.0", port=5999, home=str(home), annotator=None, token=None)
    assert run_cli(args) == 2
    assert "needs a token" in capsys.readouterr().err


def test_export_from_the_app_is_one_row_per_image(client: TestClient) -> None:
    item = _next(client)[0]
    _label(client, item["id"], "1")
    _label(client, item["id"], "4")  # relabel: the newest wins
    rows = client.get("/api/labels.csv").text.strip().splitlines()
    assert rows[0].startswith("sop_instance_uid,has_biopsy_tool,has_mag_view,annotator")
    assert len(rows) == 2 and rows[1].startswith(item["id"].rsplit("_", 1)[0] + ",1,1,alice")


def test_queue_order_is_picked_up_without_a_restart(client: TestClient) -> None:
    state = _state(client)
    wanted = sorted(i for i, im in state.images.items() if not im.holdout)[-3:]

    def write(c) -> None:
        for rank, image_id in enumerate(reversed(wanted), start=1):
            sop, frame = image_id.rsplit("_", 1)
            c.execute(
                "INSERT INTO labeling_queue VALUES (?, ?, ?, 0.5, 'uncertain', 'm1', now())",
                [sop, int(frame), rank],
            )

    state.store.run(write)
    state.refresh()
    state.settings.holdout_share = 0.0
    assert [i["id"] for i in _next(client, n=3)] == wanted[::-1]


def test_frames_indexed_before_their_thumbnails_join_once_rendered(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop is indexed, then rendered: a refresh between the two must not leave its
    frames out until the index changes again (issue 19: a new drop never reached review
    mode while the labeler ran)."""
    import labeler.catalog

    hidden = sorted((home / "thumbnails").glob("*.png"))[:3]
    for png in hidden:
        png.rename(png.with_suffix(".later"))
    monkeypatch.setattr(labeler.catalog, "RECHECK_S", 0.0)  # read again at once
    c, state = _client(home)
    try:
        shown = set(state.images)
        assert len(shown) >= 3 and not {p.stem for p in hidden} & shown
        state.refresh()  # the index has not changed, nothing rendered yet
        assert set(state.images) == shown
        for png in hidden:
            png.with_suffix(".later").rename(png)
        state.refresh()
        assert set(state.images) == shown | {p.stem for p in hidden}
    finally:
        state.close()


def test_labels_submitted_while_another_process_holds_the_lock(client: TestClient) -> None:
    state = _state(client)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(4); c.close()",
            str(state.store.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    slowest = 0.0
    ids = []
    t_lock = time.monotonic()
    for _ in range(15):
        t0 = time.perf_counter()
        item = _next(client)[0]
        assert client.get(item["url"]).status_code == 200
        _label(client, item["id"], "2")
        slowest = max(slowest, time.perf_counter() - t0)
        ids.append(item["id"])
    assert time.monotonic() - t_lock < 4, "the labels went in after the lock freed: no proof"
    assert state.writer.pending  # the database was locked: waiting, not lost
    assert slowest < 1.0  # each keypress was answered while the lock was held
    holder.wait(timeout=30)
    events = _stored(client)
    assert sorted(f"{e.sop_instance_uid}_{e.frame}" for e in events) == sorted(ids)
    assert client.get("/api/stats").json()["pending_writes"] == 0


def test_a_dead_labelers_journal_is_replayed(home: Path) -> None:
    c, state = _client(home)
    image = next(iter(state.images.values()))
    state.close()
    journal = home / "labeler" / "journal" / "journal-1-1.jsonl"
    event = LabelEvent(image.sop_instance_uid, "label", "zoe", "random", 0, True, False)
    journal.write_text(json.dumps(event.to_json()) + "\n")  # written, never stored
    c, state = _client(home)
    try:
        events = load_events(Store(home / DB_NAME))
        assert [e.event_id for e in events] == [event.event_id]
        assert not journal.exists()
        assert state.stats("zoe")["mine"] == 1
    finally:
        state.close()


def test_imported_labels_show_up_in_a_running_labeler(client: TestClient, tmp_path: Path) -> None:
    from mammo_dagster.cli import main as mammo

    state = _state(client)
    image = next(iter(state.images.values()))
    csv_path = tmp_path / "in.csv"
    csv_path.write_text(
        f"sop_instance_uid,has_biopsy_tool,has_mag_view\n{image.sop_instance_uid},1,0\n"
    )
    assert mammo(["labels", "import", str(csv_path), "--home", str(state.settings.home.root)]) == 0
    state.refresh()
    assert client.get("/api/stats").json()["labeled"] == 1
    assert image.id not in {i["id"] for i in _next(client, n=50)}


def test_undo_takes_back_exactly_the_image_the_page_shows(client: TestClient) -> None:
    a, b = (i["id"] for i in _next(client, n=2))
    first = _label(client, a, "1")["event_id"]
    _label(client, b, "2")
    # the page puts `a` back (say `b`'s answer was lost): the server retracts `a`, not `b`
    r = client.post("/api/undo", json={"event_id": "undo-000000001", "retracts": first})
    assert r.json()["item"]["id"] == a
    never = client.post("/api/undo", json={"retracts": "not-stored-123"}).json()
    assert never["item"] is None  # a label the server refused retracts nothing else
    state = _state(client)
    assert state.writer.wait_stored(30)
    current = state.store.run(
        lambda c: c.execute("SELECT sop_instance_uid FROM current_labels").fetchall()
    )
    assert current == [(b.rsplit("_", 1)[0],)]
    assert client.post("/api/undo", json={"event_id": ["x"]}).status_code == 400


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ({"host": "evil.example"}, "/"),  # DNS rebinding onto 127.0.0.1
        ({"origin": "http://evil.example"}, "/api/next"),  # another site's page
        ({"content-type": "text/plain"}, "/api/label"),  # a no-preflight cross-site POST
    ],
)
def test_other_sites_cannot_drive_the_labeler(client: TestClient, headers, path) -> None:
    if path == "/":
        r = client.get(path, headers=headers)
    else:
        r = client.post(path, content=b'{"n": 1, "id": "x", "key": "1"}', headers=headers)
    assert r.status_code == 403
    assert _stored(client) == []


def test_one_labeler_per_data_folder(client: TestClient, home: Path) -> None:
    from labeler.state import AlreadyRunning

    with pytest.raises(AlreadyRunning, match="already serves"):
        LabelerState(Settings(home=home, refresh_s=3600))


def test_the_page_keeps_its_images_leased(client: TestClient) -> None:
    state = _state(client)
    held = [i["id"] for i in _next(client, n=4)]
    for image_id in held:
        state.leases[image_id].until = time.time() + 1  # about to run out
    assert client.post("/api/renew", json={"have": held}).status_code == 200
    assert all(state.leases[i].until > time.time() + 60 for i in held)
    assert not {i["id"] for i in _next(client, n=8, who="bob")} & set(held)


def test_the_app_export_hides_the_source(client: TestClient) -> None:
    _label(client, _next(client)[0]["id"], "3")
    rows = client.get("/api/labels.csv").text.strip().splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    assert row[header.index("source")] == ""


def _predict_all(state: LabelerState, thresholds=(0.5, 0.5)) -> dict:
    probs = fake_model(state.settings.home.root, sorted(state.images), thresholds=thresholds)
    state.refresh()
    return probs


def test_review_serves_flagged_and_borderline_first_with_random_checks(
    client: TestClient,
) -> None:
    state = _state(client)
    probs = _predict_all(state)
    order = state.review_order()
    items = {i: state.item(i) for i in order}
    assert not any(state.images[i].holdout for i in order)  # never anchors the hold-out
    reasons = [items[i]["reason"] for i in order]
    ranked = [i for i in order if items[i]["reason"] != "unflagged"]
    assert ranked and set(reasons) <= {"flagged", "borderline", "unflagged"}
    margins = [state.predictions[state.images[i].key].margin for i in ranked]
    assert margins == sorted(margins)  # closest to a threshold first
    checks = reasons.count("unflagged")
    assert 0 < checks <= max(10, 0.1 / 0.9 * len(ranked) + 1)
    for i in order:
        pb, pm = probs[i]
        flags = (pb >= 0.5, pm >= 0.5)
        assert items[i]["flags"] == {"biopsy": flags[0], "mag": flags[1]}
        assert KEYS[items[i]["model_key"]] == flags
        assert items[i]["cam_flags"] == (
            [f for f, up in zip(("biopsy", "mag"), flags, strict=True) if up]
            or [max(("biopsy", "mag"), key=lambda f: probs[i][f == "mag"])]
        )
    # images leased to another annotator (labeling) are not offered for review
    served = {it["id"] for it in _next(client, n=8, who="bob")}
    r = client.post("/api/next", json={"n": 5, "mode": "review"})
    assert [i["id"] for i in r.json()["items"]] == [i for i in order if i not in served][:5]
    assert r.json()["stats"]["to_review"] == len(order)
    assert client.post("/api/next", json={"mode": "audit"}).status_code == 400


def test_review_answers_are_labels_with_source_review(client: TestClient) -> None:
    state = _state(client)
    _predict_all(state)
    first, second = client.post("/api/next", json={"n": 2, "mode": "review"}).json()["items"]
    # y: the model is right (the page sends the model's own key) ...
    _label(client, first["id"], first["model_key"], mode="review", model_version="m0001")
    # ... n then 4: it is wrong, both flags are present
    _label(client, second["id"], "4", mode="review", model_version="m0001")
    events = _stored(client)
    assert [(e.source, e.model_version) for e in events] == [("review", "m0001")] * 2
    assert (events[0].has_biopsy_tool, events[0].has_mag_view) == KEYS[first["model_key"]]
    assert (events[1].has_biopsy_tool, events[1].has_mag_view) == (True, True)
    stats = client.get("/api/stats?mode=review").json()
    assert stats["to_review"] == len(state.review_order()) - 2
    # label mode never gets the review count: its changes would tell hold-out images apart
    assert client.get("/api/stats").json()["to_review"] is None
    undone = client.post("/api/undo", json={}).json()["item"]
    assert undone["id"] == second["id"] and undone["model_key"] == second["model_key"]
    again = client.post("/api/next", json={"n": 1, "mode": "review"}).json()["items"]
    assert again[0]["id"] == second["id"]  # the undone image comes back first


def test_review_page_and_gradcam_without_a_network(client: TestClient) -> None:
    state = _state(client)
    page = client.get("/review").text
    assert 'data-mode="review"' in page and "Model right" in page and "Grad-CAM" in page
    image_id = sorted(state.images)[0]
    r = client.get(f"/cam?id={image_id}&flag=mag")
    assert r.status_code == 503 and "no model" in r.text
    _predict_all(state)  # a model with a card but no model.pt
    r = client.get(f"/cam?id={image_id}&flag=mag")
    assert r.status_code == 503 and "no network for Grad-CAM" in r.text
    assert client.get(f"/cam?id={image_id}&flag=../../x").status_code == 400
    assert client.get("/cam?id=nope_0&flag=mag").status_code == 404


def test_a_holdout_label_stays_holdout_when_answered_from_the_review_page(
    client: TestClient,
) -> None:
    state = _state(client)
    _predict_all(state)
    holdout = next(i for i in sorted(state.images) if state.images[i].holdout)
    _label(client, holdout, "1")  # label mode
    # a fresh review page has no history: "u" undoes the newest event, this one ...
    back = client.post("/api/undo", json={"mode": "review"}).json()["item"]
    assert back["id"] == holdout
    # ... and "y" on it from the review page is still recorded as a hold-out label
    _label(client, holdout, back["model_key"], mode="review")
    events = _stored(client)
    assert [e.source for e in events] == ["holdout", "holdout", "holdout"]


def test_pages_carry_an_inline_favicon(client: TestClient) -> None:
    """Issue 19: no favicon meant a 404 (or a login redirect) on every page load."""
    from labeler.app import FAVICON

    page = client.get("/")
    assert page.status_code == 200
    assert f'<link rel="icon" href="{FAVICON}">' in page.text
    assert FAVICON.startswith("data:image/svg+xml,") and "%3Csvg" in FAVICON
