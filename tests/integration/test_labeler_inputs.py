"""The labeler's inputs (issue 18): every JSON body checked field by field (400 with a
one-line reason, never a 500), a body size limit, strict booleans, bounded strings,
formula-safe CSV exports, typed and nosniff answers with no server paths, /login under
the same Origin/Host rules."""
# ruff: noqa: F811  (the fixtures are test_labeler.py's, imported by name)

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from labeler.web import MAX_BODY
from mammo_dagster.core.store.labels import export_csv, read_label_csv
from tests.integration.test_labeler import (  # noqa: F401  (fixtures)
    _client,
    _next,
    _state,
    _stored,
    client,
    home,
    template,
)

JSON = {"content-type": "application/json"}


def post_raw(c: TestClient, path: str, raw: str | bytes):
    return c.post(path, content=raw, headers=JSON)


def _refused(r, status: int = 400) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    reason = r.json()["error"]
    assert reason and "\n" not in reason and "Traceback" not in reason
    return reason


def test_wrong_types_are_400s_not_500s(client: TestClient) -> None:
    item = _next(client)[0]
    assert "annotator must be a string" in _refused(client.post("/api/next", json={"annotator": 5}))
    assert "n must be a whole number" in _refused(post_raw(client, "/api/next", '{"n": 1e400}'))
    assert "n must be a whole number" in _refused(client.post("/api/next", json={"n": "3"}))
    assert "n must be a whole number" in _refused(client.post("/api/next", json={"n": True}))
    assert "have must be a list" in _refused(client.post("/api/next", json={"have": "abc"}))
    assert "have must be a list" in _refused(client.post("/api/renew", json={"have": [1, 2]}))
    assert client.post("/api/next", json={"have": None}).status_code == 200  # null = none
    assert "mode must be" in _refused(client.post("/api/next", json={"mode": ["label"]}))
    assert "not JSON" in _refused(post_raw(client, "/api/next", "{'n': 1}"))
    assert "JSON object" in _refused(post_raw(client, "/api/next", "[1, 2]"))
    deep = '{"a":' * 5_000 + "1" + "}" * 5_000  # under the size limit, past Python's stack
    assert "not JSON" in _refused(post_raw(client, "/api/label", deep))
    assert "id must be a string" in _refused(
        client.post("/api/label", json={"id": ["x"], "key": "1"})
    )
    assert "key must be a string" in _refused(
        client.post("/api/label", json={"id": item["id"], "key": 1})
    )
    assert _stored(client) == []


def test_label_flags_are_strict_booleans(client: TestClient) -> None:
    item = _next(client)[0]
    body = {"id": item["id"], "has_biopsy_tool": "false", "has_mag_view": "no"}
    assert "has_biopsy_tool must be true or false" in _refused(client.post("/api/label", json=body))
    body = {"id": item["id"], "has_biopsy_tool": False, "has_mag_view": 0}
    assert "has_mag_view must be true or false" in _refused(client.post("/api/label", json=body))
    assert _stored(client) == []  # it was stored as "both" before
    body = {"id": item["id"], "has_biopsy_tool": False, "has_mag_view": True}
    assert client.post("/api/label", json=body).status_code == 200
    (event,) = _stored(client)
    assert (event.has_biopsy_tool, event.has_mag_view) == (False, True)


def test_bodies_and_strings_are_bounded(client: TestClient) -> None:
    item = _next(client)[0]
    huge = json.dumps({"id": item["id"], "key": "1", "model_version": "x" * 2_000_000})
    assert "over 64 KB" in _refused(post_raw(client, "/api/label", huge), 413)
    ten_mb = b'{"n": 1, "pad": "' + b"x" * 10_000_000 + b'"}'
    assert "over 64 KB" in _refused(post_raw(client, "/api/next", ten_mb), 413)
    body = {"id": item["id"], "key": "1", "model_version": "m" * 65}
    assert "model_version must be a string of at most 64" in _refused(
        client.post("/api/label", json=body)
    )
    assert len(json.dumps({"have": ["x" * 100] * 50})) < MAX_BODY  # a real page fits
    assert _stored(client) == []


def test_random_bodies_never_crash_the_api(client: TestClient) -> None:
    """A seeded property test: any JSON value in any field gets a 2xx or a 4xx."""
    rng = random.Random(18)
    values = [None, True, False, 0, -1, 2**70, 1.5, float("nan"), "", "1", "x" * 300, "é",
              [], ["a"], [None], {}, {"a": 1}, "<script>", "=HYPERLINK(1)"]  # fmt: skip
    fields = ["annotator", "n", "have", "mode", "id", "key", "has_biopsy_tool",
              "has_mag_view", "model_version", "event_id", "retracts"]  # fmt: skip
    for i in range(300):
        body = {f: rng.choice(values) for f in rng.sample(fields, rng.randint(1, 5))}
        path = rng.choice(["/api/next", "/api/label", "/api/undo", "/api/renew"])
        raw = json.dumps(body, allow_nan=True)
        r = post_raw(client, path, raw)
        assert r.status_code < 500, (i, path, raw, r.status_code, r.text)
        if r.status_code >= 400:
            assert "\n" not in r.json()["error"]


def test_csv_exports_neutralize_formulas(client: TestClient, tmp_path: Path) -> None:
    item = _next(client)[0]
    body = {"id": item["id"], "key": "1", "model_version": '=HYPERLINK("http://x","y")'}
    assert client.post("/api/label", json=body).status_code == 200
    _stored(client)
    text = client.get("/api/labels.csv").text
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["model_version"] == '\'=HYPERLINK("http://x","y")'
    out = tmp_path / "labels.csv"
    export_csv(_state(client).store, out)
    (row,) = csv.DictReader(out.open())
    assert row["model_version"].startswith("'=")
    (event,) = read_label_csv(out, "import")  # and it imports back
    assert event.sop_instance_uid == row["sop_instance_uid"]


def test_answers_are_typed_nosniff_and_name_no_server_path(client: TestClient, home) -> None:
    item = _next(client)[0]
    r = client.get(f"/cam?id={item['id']}&flag=biopsy&model=m9999")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.text.startswith("no model") and str(home) not in r.text
    r = client.get("/cam?id=<script>alert(1)</script>&flag=biopsy")
    assert r.status_code == 404 and "<script>" not in r.text
    assert r.headers["content-type"].startswith("text/plain")
    for path in ("/", "/api/stats", f"/img?id={item['id']}"):
        assert client.get(path).headers["x-content-type-options"] == "nosniff", path


def test_login_keeps_the_origin_rules_and_a_non_ascii_token_is_just_wrong(home: Path) -> None:
    c, state = _client(home, token="correct-horse-battery", annotator="erin")
    try:
        r = c.post(
            "/login",
            data={"token": "correct-horse-battery"},
            headers={"origin": "http://evil.example"},
            follow_redirects=False,
        )
        assert r.status_code == 403
        r = c.post(
            "/api/next", json={"n": 1}, headers={"Authorization": "Bearer pässwörd".encode()}
        )
        assert r.status_code == 401
    finally:
        state.close()


def test_a_token_must_have_real_entropy(home: Path) -> None:
    from labeler.settings import Settings

    for weak in (" " * 12, "secret", "correct horse battery staple"):
        with pytest.raises(ValueError, match="at least 16 characters without spaces"):
            Settings(home=home, token=weak)
    assert Settings(home=home, token="correct-horse-battery").token


def test_login_is_rate_limited_and_sessions_expire(home: Path) -> None:
    from labeler.guard import LOGIN_ATTEMPTS, SESSION_S

    token = "correct-horse-battery"
    c, state = _client(home, token=token, annotator="erin")
    try:
        for _ in range(LOGIN_ATTEMPTS):
            r = c.post("/login", data={"token": "wrong-wrong-wrong"}, follow_redirects=False)
            assert r.status_code == 303
        r = c.post("/login", data={"token": token}, follow_redirects=False)
        assert r.status_code == 429 and "too many wrong tokens" in r.text
        assert c.post("/api/next", json={"n": 1}).status_code == 401  # not signed in
        assert SESSION_S <= 24 * 3600
        middleware = [m for m in c.app.user_middleware if "Session" in m.cls.__name__]
        assert middleware and middleware[0].kwargs["max_age"] == SESSION_S
    finally:
        state.close()


def _sign_in(c: TestClient, token: str, who: str) -> TestClient:
    """`c` signed in with `token` as `who` (a browser of its own: its own cookies)."""
    assert c.post("/login", data={"token": token}, follow_redirects=False).status_code == 303
    assert c.post("/annotator", data={"annotator": who}, follow_redirects=False).status_code == 303
    return c


def _browser(c: TestClient) -> TestClient:
    return TestClient(c.app, base_url="http://127.0.0.1")


def test_one_session_is_revoked_without_signing_out_the_others(home: Path, capsys) -> None:
    """Issue 18: sessions expire *and can be revoked*, one at a time, from the command
    line while the labeler runs; the others and the token stay as they were."""
    from labeler.cli import main

    token = "correct-horse-battery"
    a, state = _client(home, token=token)
    a, b = _sign_in(a, token, "alice"), _sign_in(_browser(a), token, "bob")
    try:
        assert a.post("/api/next", json={"n": 1}).status_code == 200
        assert b.post("/api/next", json={"n": 1}).status_code == 200
        assert main(["--home", str(home), "--sessions"]) == 0
        listing = capsys.readouterr().out
        assert "2 signed-in session(s)" in listing and "alice" in listing and "bob" in listing
        alice = next(line.split()[0] for line in listing.splitlines() if "alice" in line)
        assert token not in listing and len(alice) == 8
        assert main(["--home", str(home), "--revoke", alice[:4]]) == 2  # too short to be sure
        assert main(["--home", str(home), "--revoke", alice]) == 0
        assert "signed out 1 session(s)" in capsys.readouterr().out
        assert a.post("/api/next", json={"n": 1}).status_code == 401  # at once, same process
        assert a.get("/", follow_redirects=False).headers["location"] == "/login"
        assert b.post("/api/next", json={"n": 1}).status_code == 200  # bob is untouched
        api = {"Authorization": f"Bearer {token}"}  # and the token itself still works
        assert a.post("/api/next", json={"n": 1}, headers=api).status_code == 200
        assert main(["--home", str(home), "--revoke", alice]) == 1  # already gone
    finally:
        state.close()


def test_signing_out_ends_the_session_and_a_damaged_book_lets_nobody_in(home: Path) -> None:
    token = "correct-horse-battery"
    c, state = _client(home, token=token)
    _sign_in(c, token, "carol")
    try:
        page = c.get("/").text
        assert 'action="/logout"' in page  # a sign-out button behind a token
        cookie = dict(c.cookies)
        assert c.post("/logout", follow_redirects=False).headers["location"] == "/login"
        c.cookies.update(cookie)  # the old cookie, replayed, is worthless
        assert c.post("/api/next", json={"n": 1}).status_code == 401
        d = _sign_in(_browser(c), token, "dave")
        assert d.post("/api/next", json={"n": 1}).status_code == 200
        (home / "labeler" / "sessions.json").write_text("{not json")
        assert d.post("/api/next", json={"n": 1}).status_code == 401
    finally:
        state.close()


def test_without_a_token_there_is_nothing_to_sign_out(client: TestClient) -> None:
    assert 'action="/logout"' not in client.get("/").text
