"""Scale-out on real services: Redis and two Celery workers on this machine, three drops
processed through the Celery executor, one worker killed mid-step."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from mammo_dagster.cluster import launch, local_cluster, step_workers
from mammo_dagster.core.imaging.batch import thumbnail_name
from mammo_dagster.core.store.db import DB_NAME

pytestmark = pytest.mark.slow
DROPS = ["d1", "d2", "d3"]
RUN_CONFIG = """ops:
  dicom_index: {config: {workers: 1}}
  thumbnails: {config: {size: 256, workers: 1}}
  image_predictions: {config: {threads: 1}}
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with a current model (trained on drop d0) and three new drops."""
    from mammo_dagster.core.store.db import Store
    from mammo_dagster.core.store.labels import append_events
    from mammo_dagster.core.synthetic.archive import generate_archive
    from mammo_dagster.core.synthetic.truth import read_ground_truth, truth_labels
    from mammo_dagster.pipeline import materialize_ingest, train_and_predict

    root = tmp_path_factory.mktemp("scale")
    home, dagster_home = root / "home", root / "dagster"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAMMO_PATIENT_SALT", "test-salt")
        generate_archive(home / "incoming" / "d0", studies=6, seed=1, size="small",
                         ground_truth=root / "d0.csv")  # fmt: skip
        assert materialize_ingest(
            home, "d0", size=128, workers=1, dagster_home=dagster_home
        ).success
        append_events(Store(home / DB_NAME), truth_labels(read_ground_truth(root / "d0.csv")))
        model, _ = train_and_predict(
            home, ["d0"], dagster_home=dagster_home, training={"size": 64, "epochs": 1}
        )
        assert model.success
    for k, drop in enumerate(DROPS):
        generate_archive(home / "incoming" / drop, studies=8, seed=10 + k, size="small",
                         ground_truth=None)  # fmt: skip
    (root / "run.yaml").write_text(RUN_CONFIG)
    return root


def _copy(template: Path, dest: Path) -> tuple[Path, Path, dict]:
    shutil.copytree(template, dest)
    home, dagster_home = dest / "home", dest / "dagster"
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("drops", DROPS)
    env = {"MAMMO_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "MAMMO_PATIENT_SALT": "test-salt"}  # fmt: skip
    return home, dagster_home, env


def _rows(home: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(home / DB_NAME), read_only=True) as c:
        index = c.execute(
            "SELECT * EXCLUDE (indexed_at) FROM dicom_index WHERE drop_name != 'd0' "
            "ORDER BY drop_name, path, frame"
        ).fetchall()
        predictions = c.execute(
            "SELECT drop_name, sop_instance_uid, frame, model_version, round(prob_biopsy, 5), "
            "round(prob_mag, 5), flag_biopsy, flag_mag FROM image_predictions "
            "WHERE drop_name != 'd0' ORDER BY ALL"
        ).fetchall()
    return {"dicom_index": index, "image_predictions": predictions}


def _frames(home: Path) -> list[tuple]:
    with duckdb.connect(str(home / DB_NAME), read_only=True) as c:
        return c.execute(
            "SELECT sop_instance_uid, frame FROM dicom_index WHERE drop_name != 'd0' "
            "AND status = 'ok'"
        ).fetchall()


def _wait(procs: list, timeout: float) -> list[int]:
    """Exit codes of the run processes; any still running at the deadline (or when
    waiting fails) are killed, so nothing outlives the test."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [p.returncode for p in procs]


def test_three_drops_on_two_celery_workers_survive_a_killed_worker(
    template: Path, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make services` (apt install redis-server)")
    # the single-machine baseline: the default multiprocess executor, no broker
    home_a, _, env_a = _copy(template, tmp_path / "single")
    procs = [launch("process_drop", d, env_a, template / "run.yaml", tmp_path / f"a_{d}.log")
             for d in DROPS]  # fmt: skip
    assert _wait(procs, 600) == [0, 0, 0], (tmp_path / "a_d1.log").read_text()[-2000:]
    expected = _rows(home_a)
    assert {r[0] for r in expected["image_predictions"]} == set(DROPS)

    home_b, dagster_home_b, env_b = _copy(template, tmp_path / "celery")
    # a dead worker's step goes to the other one after 20 s (longer than any step here)
    with local_cluster(tmp_path / "cluster", 2, env=env_b, visibility_timeout=20) as cluster:
        env = env_b | cluster.env
        procs = [launch("process_drop", d, env, template / "run.yaml", tmp_path / f"b_{d}.log")
                 for d in DROPS]  # fmt: skip
        killed = None
        with dg.DagsterInstance.from_config(str(dagster_home_b)) as instance:
            deadline = time.monotonic() + 300
            while killed is None and time.monotonic() < deadline:
                for run in instance.get_runs(dg.RunsFilter(job_name="process_drop")):
                    for step, worker in step_workers(instance, run.run_id):
                        if step == "thumbnails" and worker.startswith("w1@"):
                            cluster.workers[0].kill()  # mid-step: the machine died
                            killed = (run.run_id, step)
                            break
                    if killed:
                        break
                time.sleep(0.05)
            if killed is None:
                _wait(procs, 0)
            assert killed, "worker w1 never started a thumbnails step"
            codes = _wait(procs, 600)
            logs = "".join((tmp_path / f"b_{d}.log").read_text()[-1500:] for d in DROPS)
            assert codes == [0, 0, 0], logs
            runs = instance.get_runs(dg.RunsFilter(job_name="process_drop"))
            assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
            started = {r.run_id: step_workers(instance, r.run_id) for r in runs}
            successes = {
                r.run_id: [
                    e.dagster_event.step_key
                    for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
                ]
                for r in runs
            }
    workers = {w.split("@")[0] for steps in started.values() for _, w in steps}
    assert workers == {"w1", "w2"}  # the work was spread over both
    retried = [w for step, w in started[killed[0]] if step == killed[1]]
    assert len(retried) == 2 and retried[0].startswith("w1@") and retried[1].startswith("w2@")
    for run_id, steps in successes.items():  # each step succeeded exactly once
        assert sorted(steps) == ["dicom_index", "image_predictions", "thumbnails"], run_id
    # same results as on one machine, nothing lost or duplicated
    assert _rows(home_b) == expected
    names = {thumbnail_name(r[0], r[1]) for r in _frames(home_a)}
    assert len(names) > 3 * 20
    for name in names:
        assert (home_b / "thumbnails" / name).read_bytes() == (
            home_a / "thumbnails" / name
        ).read_bytes()
    assert not list((home_b / "thumbnails").glob(".*.tmp"))
