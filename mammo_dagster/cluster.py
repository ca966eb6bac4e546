"""A Celery cluster on this machine: Redis on loopback and N `dagster-celery` workers.

For the scale-out test and benchmark, and for trying the Celery setup before
spreading it over machines (where each machine runs its workers the same way,
see README "Scale-out"). Everything started here is stopped when the `with`
block ends, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from labeler.process import free_port, stop

PROJECT = Path(__file__).resolve().parent.parent
CELERY_YAML = PROJECT / "deploy" / "celery.yaml"


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker and its pool: a machine that died, not a clean shutdown."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@dataclass
class Cluster:
    env: dict[str, str]  # what a run (and each worker) needs in its environment
    config: Path  # the executor/worker YAML
    workers: list[Worker] = field(default_factory=list)


def _wait_ready(worker: Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"worker {worker.name} exited; see {worker.log}")
        if worker.log.exists() and " ready." in worker.log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"worker {worker.name} not ready after {timeout:.0f} s; see {worker.log}")


@contextmanager
def local_cluster(
    folder: Path,
    workers: int,
    *,
    env: dict[str, str] | None = None,
    visibility_timeout: int | None = None,
    concurrency: int = 1,
) -> Iterator[Cluster]:
    """Redis on a free loopback port and `workers` Celery workers (each `concurrency`
    processes), configured from deploy/celery.yaml (with `visibility_timeout`, if
    given: how soon a dead worker's step goes to another one)."""
    redis = shutil.which("redis-server")
    if redis is None:
        raise FileNotFoundError("redis-server is not installed (Debian: apt install redis-server)")
    folder.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(CELERY_YAML.read_text())
    if visibility_timeout is not None:
        source = config["execution"]["config"]["config_source"]
        source["broker_transport_options"]["visibility_timeout"] = visibility_timeout
    config_path = folder / "celery.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    broker = f"redis://127.0.0.1:{port}"
    cluster_env = {
        "MAMMO_EXECUTOR": "celery",
        "MAMMO_CELERY_CONFIG": str(config_path),
        "MAMMO_CELERY_BROKER": f"{broker}/0",
        "MAMMO_CELERY_BACKEND": f"{broker}/1",
    }
    bin_dir = Path(sys.executable).parent  # `dagster-celery` starts `celery` from PATH
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    full_env = os.environ | (env or {}) | cluster_env | {"PATH": path}
    server = subprocess.Popen(
        [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=(folder / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cluster = Cluster(cluster_env | (env or {}), config_path)
    try:
        deadline = time.monotonic() + 30
        while not _redis_ready(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")
            time.sleep(0.1)
        for i in range(1, workers + 1):
            name = f"w{i}"
            log = folder / f"{name}.log"
            proc = subprocess.Popen(
                [str(bin_dir / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                 "-y", str(config_path), "-n", name, "--", f"--concurrency={concurrency}",
                 f"--logfile={log}", "--without-gossip", "--without-mingle"],
                env=full_env,
                stdout=(folder / f"{name}.out").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            cluster.workers.append(Worker(name, proc, log))
        for worker in cluster.workers:
            _wait_ready(worker, 120)
        yield cluster
    finally:
        for worker in cluster.workers:
            stop(worker.proc)
        stop(server)


def launch(
    job: str, partition: str, env: dict[str, str], run_config: Path, log: Path
) -> subprocess.Popen:
    """Start one partition's run of `job` (`dagster job execute`): the run process
    walks the plan and, with MAMMO_EXECUTOR=celery in `env`, sends each step to the
    workers."""
    bin_dir = Path(sys.executable).parent
    return subprocess.Popen(
        [str(bin_dir / "dagster"), "job", "execute", "-m", "mammo_dagster.definitions",
         "-j", job, "--tags", f'{{"dagster/partition": "{partition}"}}', "-c", str(run_config)],
        env=os.environ | env | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def step_workers(instance, run_id: str) -> list[tuple[str, str]]:
    """(step key, Celery worker) for each time a worker started a step of the run, in order."""
    from dagster import DagsterEventType

    out = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        data = event.engine_event_data
        worker = data.metadata.get("Celery worker") if data and data.metadata else None
        if worker is not None:
            out.append((event.step_key or "", str(getattr(worker, "value", worker))))
    return out
