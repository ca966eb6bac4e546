"""The DICOMweb source as the environment configures it, and the retry rule."""

from __future__ import annotations

import pytest
import requests

from mammo_dagster.core.pacs.ledger import next_drop_name
from mammo_dagster.core.pacs.source import (
    PacsError,
    PacsSource,
    Retry,
    describe,
    redact,
    with_retries,
)

URL = "https://pacs.example.org/dicom-web"


def test_no_url_is_an_error_naming_the_variable() -> None:
    with pytest.raises(PacsError, match="MAMMO_DICOMWEB_URL"):
        PacsSource.from_env(environ={})


def test_bearer_token_goes_in_the_authorization_header() -> None:
    src = PacsSource.from_env(environ={"MAMMO_DICOMWEB_URL": URL, "MAMMO_DICOMWEB_TOKEN": "t0k"})
    session = src.session()
    assert src.auth == "bearer" and session.headers["Authorization"] == "Bearer t0k"
    assert session.auth is None and session.verify is True
    assert "t0k" not in repr(src)


def test_basic_auth_tls_off_and_a_ca_bundle(tmp_path) -> None:
    env = {"MAMMO_DICOMWEB_URL": URL + "/", "MAMMO_DICOMWEB_USER": "u",
           "MAMMO_DICOMWEB_PASSWORD": "p"}  # fmt: skip
    src = PacsSource.from_env(environ=env)
    assert src.url == URL and src.auth == "basic" and src.session().auth == ("u", "p")
    assert "p'" not in repr(src)
    off = PacsSource.from_env(environ=env | {"MAMMO_DICOMWEB_VERIFY": "false"})
    assert off.session().verify is False
    ca = tmp_path / "site-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert PacsSource.from_env(
        environ=env | {"MAMMO_DICOMWEB_CA_BUNDLE": str(ca)}
    ).session().verify == str(ca)
    with pytest.raises(PacsError, match="no such file"):
        PacsSource.from_env(environ=env | {"MAMMO_DICOMWEB_CA_BUNDLE": str(tmp_path / "x")})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MAMMO_DICOMWEB_TOKEN": "t", "MAMMO_DICOMWEB_USER": "u"}, "not both"),
        ({"MAMMO_DICOMWEB_USER": "u"}, "MAMMO_DICOMWEB_PASSWORD"),
    ],
)
def test_contradicting_settings_are_errors(env: dict, message: str) -> None:
    with pytest.raises(PacsError, match=message):
        PacsSource.from_env(environ={"MAMMO_DICOMWEB_URL": URL} | env)


def test_credentials_in_the_url_are_refused_and_never_echoed() -> None:
    with pytest.raises(PacsError) as e:
        PacsSource.from_env("https://me:secret@pacs.example.org/dw", environ={})
    assert "secret" not in str(e.value)
    assert (
        redact("https://pacs.example.org:8443/dw/?token=abc") == "https://pacs.example.org:8443/dw"
    )


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def test_transient_failures_are_retried_with_growing_waits() -> None:
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _http_error(503) if len(calls) == 1 else requests.ConnectionError("down")
        return "ok"

    assert with_retries(flaky, Retry(attempts=4, base_s=0.5), sleep=waits.append) == "ok"
    assert waits == [0.5, 1.0]


def test_permanent_failures_are_not_retried_and_the_last_one_is_raised() -> None:
    waits = []

    def missing():
        raise _http_error(404)

    with pytest.raises(requests.HTTPError):
        with_retries(missing, Retry(attempts=4), sleep=waits.append)
    assert waits == []

    def down():
        raise requests.ConnectionError("down")

    with pytest.raises(requests.ConnectionError):
        with_retries(down, Retry(attempts=3, base_s=1, cap_s=1.5), sleep=waits.append)
    assert waits == [1, 1.5]


def test_a_refusal_says_which_settings_to_check() -> None:
    src = PacsSource(URL, user="u", password="hunter2")
    msg = str(describe(_http_error(401), "searching", src))
    assert "refused the credentials (HTTP 401, auth: basic)" in msg and "hunter2" not in msg


def test_drop_names_count_up_within_a_day(tmp_path) -> None:
    from datetime import date

    from mammo_dagster.core.home import Home
    from mammo_dagster.core.store.db import Store

    home = Home(tmp_path)
    store = Store(home.db)
    store.migrate()
    day = date(2026, 3, 4)
    assert next_drop_name(home, store, day) == "pacs-20260304-001"
    (home.incoming / "pacs-20260304-001").mkdir(parents=True)
    (home.incoming / "pacs-20260303-007").mkdir()
    assert next_drop_name(home, store, day) == "pacs-20260304-002"
