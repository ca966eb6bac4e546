"""Fixtures integration tests share: an ephemeral Dagster instance that knows the drops
a test names, and a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import dagster as dg
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def drops_instance() -> Callable[..., dg.DagsterInstance]:
    """`drops_instance("d1", ...)`: an ephemeral instance with those drop partitions."""

    def make(*drops: str) -> dg.DagsterInstance:
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("drops", list(drops))
        return instance

    return make


@pytest.fixture
def browser() -> Iterator:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `make browser` (Debian: apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield b
        b.close()
