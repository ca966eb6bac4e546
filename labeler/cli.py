"""`mammo label` / `python -m labeler`: start the labeling app."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence

from mammo_dagster.core.home import ENV_HOME, Home

ENV_TOKEN = "MAMMO_LABELER_TOKEN"
DEFAULT_PORT = 5001


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--home", help=f"data folder (default ${ENV_HOME} or ./data)")
    p.add_argument("--annotator", help="label as this person (else each one identifies)")
    p.add_argument(
        "--token",
        help=f"require this token (default ${ENV_TOKEN}); required off loopback",
    )


def run(args: argparse.Namespace) -> int:
    from mammo_dagster.core.store.labels import clean_annotator  # here: `mammo --help` stays light

    from .settings import MIN_TOKEN
    from .state import Settings

    token = args.token or os.environ.get(ENV_TOKEN) or None
    if not is_loopback(args.host) and not token:
        print(
            f"refusing to listen on {args.host}: off this machine the labeler needs a token. "
            f"Set {ENV_TOKEN} (or pass --token) and give it to the labelers, or bind to "
            "127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    if token and (len(token) < MIN_TOKEN or any(ch.isspace() for ch in token)):
        print(f"the token must be at least {MIN_TOKEN} characters, no spaces", file=sys.stderr)
        return 2
    try:
        annotator = clean_annotator(args.annotator) if args.annotator else None
    except ValueError as e:
        print(f"--annotator: {e}", file=sys.stderr)
        return 2
    home = Home.from_env(args.home)

    import uvicorn

    from .app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .state import AlreadyRunning

    try:
        app = create_app(
            Settings(home=home, annotator=annotator, token=token, loopback=is_loopback(args.host))
        )
    except AlreadyRunning as e:
        print(str(e), file=sys.stderr)
        return 2
    print(f"labeler on http://{args.host}:{args.port}/ (data: {home.root})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labeler", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))
