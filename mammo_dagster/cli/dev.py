"""`mammo dev`: Dagster's UI and the labeler as two supervised child processes."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from ..core.home import ENV_HOME
from .common import home_of


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dev",
        parents=[common],
        help="Dagster's UI and the labeler together (Ctrl-C stops both)",
        description="Start `dagster dev` (UI on 127.0.0.1:3000) and the labeler "
        "(127.0.0.1:5001) on the same data folder; Ctrl-C stops both cleanly.",
    )
    p.add_argument("--home", help=f"data folder (default ${ENV_HOME} or ./data)")
    p.add_argument("--dagster-port", type=int, default=3000)
    p.add_argument("--labeler-port", type=int, default=5001)
    p.set_defaults(func=cmd_dev)


def _die_with_parent() -> None:
    """In a child of `mammo dev`: Ctrl-C handled normally even if `mammo dev` was started
    with SIGINT ignored (Dagster stops its own servers with SIGINT), and (Linux) SIGTERM
    when `mammo dev` dies, even by SIGKILL, so no server outlives it."""
    import ctypes
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def cmd_dev(args: argparse.Namespace) -> int:
    """Dagster's UI and the labeler side by side; Ctrl-C (or either one exiting) stops both."""
    import shutil
    import signal
    import subprocess

    from labeler.process import stop

    home = home_of(args)
    dagster_home = home.dagster
    dagster_home.mkdir(parents=True, exist_ok=True)
    project = Path(__file__).resolve().parents[2]
    if (project / "dagster.yaml").exists():
        shutil.copyfile(project / "dagster.yaml", dagster_home / "dagster.yaml")
    env = os.environ | home.env()  # `dagster dev` finds the data folder in its environment
    if not getattr(args, "debug", False):
        # libraries' deprecation notices (torch's, and `dagster dev`'s "use 'dg dev'": a
        # SupersessionWarning is a FutureWarning) are not the user's to act on
        quiet = "ignore::FutureWarning"
        env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), quiet]))
    bin_dir = Path(sys.executable).parent
    commands = {
        "dagster": [
            str(bin_dir / "dagster"),
            "dev",
            "-w",
            str(project / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(args.dagster_port),
        ],
        "labeler": [
            sys.executable,
            "-m",
            "labeler",
            "--home",
            str(home.root),
            "--port",
            str(args.labeler_port),
        ],
    }
    procs = {
        # `dagster dev` runs in DAGSTER_HOME, where its dagster.yaml is: from the project
        # folder it warns that the project's copy "will not be used"
        name: subprocess.Popen(
            cmd,
            env=env,
            cwd=dagster_home if name == "dagster" else project,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        for name, cmd in commands.items()
    }
    print(
        f"Dagster UI on http://127.0.0.1:{args.dagster_port}, labeler on "
        f"http://127.0.0.1:{args.labeler_port} (data: {home.root}). Ctrl-C stops both.",
        flush=True,
    )

    def terminated(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    # Explicitly: a process started in the background by a shell without job control
    # inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, terminated)
    status = 0
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        name, proc = next((n, p) for n, p in procs.items() if p.poll() is not None)
        status = proc.returncode or 0
        print(f"{name} exited with status {status}; stopping the other", file=sys.stderr)
    except KeyboardInterrupt:
        print("stopping Dagster and the labeler ...", file=sys.stderr, flush=True)
    finally:
        for proc in procs.values():
            stop(proc, timeout=20)
    return status
