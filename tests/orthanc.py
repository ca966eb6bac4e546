"""A real Orthanc (Debian's `orthanc` + `orthanc-dicomweb`) for tests: its own config and
storage folder, a free loopback port, basic auth; stopped whatever happens."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "mammo", "orthanc-test-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def installed() -> bool:
    return Path(ORTHANC).exists() and PLUGIN.exists()


class Orthanc:
    """One running server; `url` is its DICOMweb root, `rest` its REST root."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.storage = folder / "storage"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.rest}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (USER, PASSWORD)

    def start(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "mammo-test",
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.storage),
            "HttpPort": self.port,
            "DicomServerEnabled": False,
            "DicomPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "StableAge": 1,
            "MaximumStorageCacheSize": 0,  # serve what is on disk (tests break stored files)
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config))
        log = (self.folder / "orthanc.log").open("ab")
        self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: see {self.folder / 'orthanc.log'}")
            try:
                if requests.get(f"{self.rest}/system", auth=self.auth, timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("Orthanc did not answer within 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def upload(self, path: Path) -> str:
        """POST one file to /instances; returns Orthanc's instance id."""
        r = requests.post(f"{self.rest}/instances", data=path.read_bytes(), auth=self.auth)
        r.raise_for_status()
        return r.json()["ID"]

    def attachment_file(self, orthanc_id: str) -> Path:
        """The stored file of an instance, in the storage folder."""
        r = requests.get(f"{self.rest}/instances/{orthanc_id}/attachments/dicom/info",
                         auth=self.auth)  # fmt: skip
        r.raise_for_status()
        uuid = r.json()["Uuid"]
        return self.storage / uuid[:2] / uuid[2:4] / uuid

    def get(self, path: str):
        r = requests.get(f"{self.rest}{path}", auth=self.auth, timeout=10)
        r.raise_for_status()
        return r.json()


@contextmanager
def running(folder: Path) -> Iterator[Orthanc]:
    server = Orthanc(folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def for_mammo(
    folder: Path, monkeypatch: pytest.MonkeyPatch, *, url: bool = True
) -> Iterator[Orthanc]:
    """A fresh Orthanc with the environment pointing `mammo pacs` at it (basic auth;
    `url` False leaves MAMMO_DICOMWEB_URL to the test). Not installed: a failure that
    says how to install it."""
    if not installed():
        pytest.fail("Orthanc is not installed: run `make orthanc` (Debian: orthanc, "
                    "orthanc-dicomweb)")  # fmt: skip
    with running(folder) as server:
        if url:
            monkeypatch.setenv("MAMMO_DICOMWEB_URL", server.url)
        monkeypatch.setenv("MAMMO_DICOMWEB_USER", USER)
        monkeypatch.setenv("MAMMO_DICOMWEB_PASSWORD", PASSWORD)
        yield server
