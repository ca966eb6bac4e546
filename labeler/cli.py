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
    p.add_argument(
        "--sessions",
        action="store_true",
        help="list the signed-in sessions (id, annotator, since, until) and exit",
    )
    p.add_argument(
        "--revoke",
        metavar="ID",
        help="sign out one session (its id from --sessions, 8+ characters) or 'all', and "
        "exit; works while the labeler runs",
    )


def manage_sessions(args: argparse.Namespace) -> int:
    """--sessions / --revoke: the session book of the data folder's labeler."""
    import time

    from .guard import sessions

    book = sessions(Home.from_env(args.home).labeler)
    if args.revoke:
        try:
            ended = book.revoke(args.revoke)
        except ValueError as e:
            print(f"--revoke: {e}", file=sys.stderr)
            return 2
        if not ended:
            print(f"no signed-in session {args.revoke!r}", file=sys.stderr)
            return 1
        print(f"signed out {len(ended)} session(s): {', '.join(s.short for s in ended)}")
        return 0
    day = "%Y-%m-%d %H:%M"
    live = book.sessions()
    for s in live:
        since, until = (
            time.strftime(day, time.localtime(s.started)),
            time.strftime(day, time.localtime(s.expires)),
        )
        print(f"{s.short}  {s.annotator or '-':<20}  since {since}  until {until}")
    print(f"{len(live)} signed-in session(s)")
    return 0


def run(args: argparse.Namespace) -> int:
    from mammo_dagster.core.store.labels import clean_annotator  # here: `mammo --help` stays light

    if getattr(args, "sessions", False) or getattr(args, "revoke", None):
        return manage_sessions(args)

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
