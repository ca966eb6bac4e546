"""Property-based tests of the labeler's HTTP surface (hypothesis, derandomized so CI
runs the same examples every time): whatever a client sends, the answer is a 2xx or a
one-line 4xx, never a 5xx; a refused label stores nothing and an accepted one is
stored once; image routes answer by id only and echo nothing back."""

# ruff: noqa: F811  (the fixtures are test_labeler.py's, imported by name)
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from labeler.web import MAX_BODY
from tests.integration.test_labeler import (  # noqa: F401  (fixtures)
    _next,
    _state,
    _stored,
    client,
    home,
    template,
)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FIELDS = ["annotator", "n", "have", "mode", "id", "key", "has_biopsy_tool", "has_mag_view",
          "model_version", "event_id", "retracts", "flag", "model"]  # fmt: skip
PATHS = ["/api/next", "/api/label", "/api/undo", "/api/renew"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
BODIES = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), JSON_VALUES, max_size=6)


def _one_line_refusal(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        reason = r.json()["error"]
        assert reason and "\n" not in reason and "Traceback" not in reason


@SETTINGS
@given(path=st.sampled_from(PATHS), body=BODIES)
def test_any_json_object_gets_an_answer_not_a_crash(client: TestClient, path: str, body) -> None:
    raw = json.dumps(body, allow_nan=True)
    if len(raw) > MAX_BODY:
        return
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    _one_line_refusal(r)


@SETTINGS
@given(path=st.sampled_from(PATHS), raw=st.binary(max_size=512))
def test_any_bytes_get_an_answer_not_a_crash(client: TestClient, path: str, raw: bytes) -> None:
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    _one_line_refusal(r)


@SETTINGS
@given(
    key=st.one_of(st.sampled_from(["1", "2", "3", "4", "s"]), JSON_VALUES),
    version=st.one_of(st.none(), st.text(max_size=80)),
    extra=st.dictionaries(st.sampled_from(["has_biopsy_tool", "has_mag_view"]), JSON_VALUES),
)
def test_a_label_is_stored_once_when_accepted_and_never_when_refused(
    client: TestClient, key, version, extra
) -> None:
    item = _next(client)[0]
    before = len(_stored(client))
    body = {"id": item["id"], "key": key, "model_version": version, **extra}
    raw = json.dumps(body, allow_nan=True)  # NaN and Infinity too, as a hostile client sends
    r = client.post("/api/label", content=raw, headers={"content-type": "application/json"})
    _one_line_refusal(r)
    after = len(_stored(client))
    assert after - before == (1 if r.status_code == 200 else 0), (body, r.status_code, r.text)


@SETTINGS
@given(image=st.text(max_size=120), flag=st.text(max_size=12), model=st.text(max_size=12))
def test_image_routes_answer_by_id_and_echo_nothing(
    client: TestClient, image: str, flag: str, model: str
) -> None:
    for path, params in (
        ("/img", {"id": image}),
        ("/cam", {"id": image, "flag": flag, "model": model}),
    ):
        r = client.get(path, params=params)
        assert r.status_code in (200, 400, 404, 503), (path, params, r.status_code)
        if r.status_code != 200:
            assert r.headers["content-type"].startswith("text/plain")
            assert len(image) < 4 or image not in r.text
            assert str(_state(client).settings.home.root) not in r.text
