"""One labeler's settings: its data folder (the core's `Home`) and how it serves."""

from __future__ import annotations

from dataclasses import dataclass, field

from mammo_dagster.core.home import Home
from mammo_dagster.core.model.splits import HOLDOUT_FRACTION

#: A token guards a labeler on the network: 12 spaces or "secret" are not one.
MIN_TOKEN = 16


@dataclass
class Settings:
    """One labeler's settings; its data folder is the core's `Home` (a folder given as
    a path becomes the Home of that folder, with the environment's settings)."""

    home: Home
    annotator: str | None = None  # default annotator (else each one identifies)
    token: str | None = None
    holdout_share: float = HOLDOUT_FRACTION
    review_random_share: float = 0.1  # review mode: unflagged images mixed in as checks
    refresh_s: float = 2.0
    store_timeout_s: float = 5.0
    seed: str = "labeler-v1"
    loopback: bool = True  # bound to loopback: only loopback Host names are served
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = Home.of(self.home)
        if self.token is not None and (
            len(self.token) < MIN_TOKEN or any(ch.isspace() for ch in self.token)
        ):
            raise ValueError(
                f"the labeler token must be at least {MIN_TOKEN} characters without spaces "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
