"""Scale-out: the same drops through the single-machine executor and 1 vs 2 Celery workers.

Full-size synthetic DICOMs (mixed transfer syntaxes, from bench_ingest's cache) are
split into drops; each configuration gets a fresh data folder and Dagster instance
and runs `process_drop` (index -> thumbnails -> predictions with a 224-px model)
for every drop, as a backfill would:

* multiprocess, 1 run at a time: the default single-machine setup (dagster.yaml's
  run queue allows one run; a run's thumbnails use `--decode-workers` processes);
* celery, 1 worker and 2 workers: every drop's run starts at once and the steps
  queue on Redis for the workers (each worker one process).

Reported: images/s over the whole backfill, and orchestration overhead per step
(a drop's run wall time minus the time spent inside its steps, per step), measured
on one extra drop run alone, without queueing. From these numbers the README
projects the worker machines a 1-million-image archive needs overnight.

    python benchmarks/bench_scale.py [--drops 4] [--repeat 2] [--doc-only]

Results go to results/scale.json; the tables to docs/benchmarks/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pages import RESULTS, measured, table, write_section  # noqa: E402

DATA = RESULTS / "data"
SOURCE = DATA / "ingest_128" / "drop"


def ensure_data() -> None:
    """bench_ingest's 128 full-size images and bench_predict's 224-px model (made once)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_ingest
    import bench_predict

    bench_ingest._drop(128)
    bench_predict.model(224)


def make_home(root: Path, drops: int) -> tuple[Path, Path, list[str], dict[str, int]]:
    """A data folder whose drops share the cached files (hard links) and the model;
    returns the drop names and each drop's file count."""
    from mammo_dagster.core.model.modelstore import CurrentModel, write_current

    home, dagster_home = root / "home", root / "dagster"
    patients = sorted(p for p in SOURCE.iterdir() if p.is_dir())
    names = [f"d{k + 1}" for k in range(drops)]
    images = dict.fromkeys(names, 0)
    for k, patient in enumerate(patients):
        dest = home / "incoming" / names[k % drops] / patient.name
        for f in patient.rglob("*"):
            if f.is_file():
                target = dest / f.relative_to(patient)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, target)
                images[names[k % drops]] += 1
    import bench_predict

    shutil.copytree(bench_predict.model(224), home / "models" / "m0001")
    write_current(home / "models", CurrentModel("m0001", 0, 0))
    dagster_home.mkdir(parents=True)
    return home, dagster_home, names, images


def run_config(decode_workers: int) -> str:
    return (
        "ops:\n"
        f"  dicom_index: {{config: {{workers: {decode_workers}}}}}\n"
        f"  thumbnails: {{config: {{size: 512, workers: {decode_workers}}}}}\n"
        f"  image_predictions: {{config: {{threads: {decode_workers}}}}}\n"
    )


def timings(dagster_home: Path) -> list[dict]:
    """Per run: wall seconds (RUN_START -> RUN_SUCCESS) and seconds inside each step."""
    import dagster as dg

    out = []
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for run in instance.get_runs(dg.RunsFilter(job_name="process_drop")):
            logs = instance.all_logs(run.run_id)
            at = {}
            steps: dict[str, dict] = {}
            for record in logs:
                event = record.dagster_event
                if event is None:
                    continue
                kind = event.event_type_value
                if kind in ("PIPELINE_START", "RUN_START", "PIPELINE_SUCCESS", "RUN_SUCCESS"):
                    at[kind.replace("PIPELINE", "RUN")] = record.timestamp
                elif kind in ("STEP_START", "STEP_SUCCESS"):
                    steps.setdefault(event.step_key, {})[kind] = record.timestamp
            inside = {
                k: v["STEP_SUCCESS"] - v["STEP_START"]
                for k, v in steps.items()
                if "STEP_START" in v and "STEP_SUCCESS" in v
            }
            out.append(
                {
                    "status": run.status.value,
                    "wall": at.get("RUN_SUCCESS", 0) - at.get("RUN_START", 0),
                    "steps": inside,
                }
            )
    return out


def one_config(name: str, workers: int, drops: int, decode: int, root: Path) -> dict:
    """Process every drop (a backfill), then one more drop alone for the overhead."""
    import dagster as dg

    from mammo_dagster.cluster import launch, local_cluster

    home, dagster_home, names, images = make_home(root, drops + 1)
    backfill, alone = names[:drops], names[drops]
    config = root / "run.yaml"
    config.write_text(run_config(decode))
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("drops", names)
    env = {"MAMMO_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "MAMMO_PATIENT_SALT": "bench-salt"}  # fmt: skip

    def backfill_and_alone(run_env: dict) -> tuple[float, float]:
        t0 = time.perf_counter()
        if workers == 0:  # the single-machine queue: one run at a time
            for d in backfill:
                p = launch("process_drop", d, run_env, config, root / f"{d}.log")
                if p.wait() != 0:
                    raise RuntimeError(f"{name}: run for {d} failed; see {root / f'{d}.log'}")
        else:  # a backfill launches every drop; the workers take the steps
            procs = [(d, launch("process_drop", d, run_env, config, root / f"{d}.log"))
                     for d in backfill]  # fmt: skip
            try:
                for d, p in procs:
                    if p.wait() != 0:
                        raise RuntimeError(f"{name}: run for {d} failed; see {root / f'{d}.log'}")
            finally:  # nothing outlives a failed configuration
                for _, p in procs:
                    if p.poll() is None:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        if launch("process_drop", alone, run_env, config, root / "alone.log").wait() != 0:
            raise RuntimeError(f"{name}: the lone run failed")
        return wall, time.perf_counter() - t1

    if workers == 0:
        wall, alone_wall = backfill_and_alone(env)
    else:
        with local_cluster(root / "cluster", workers, env=env) as cluster:
            wall, alone_wall = backfill_and_alone(env | cluster.env)
    runs = timings(dagster_home)
    done = sum(images[d] for d in backfill)
    lone = runs[0]  # newest first: the lone run
    overhead = (lone["wall"] - sum(lone["steps"].values())) / max(1, len(lone["steps"]))
    return {
        "config": name,
        "images": done,
        "backfill_s": round(wall, 1),
        "images_per_s": round(done / wall, 2),
        "lone_run_s": round(alone_wall, 1),
        "lone_images": images[alone],
        "lone_run_inside_steps_s": {k: round(v, 2) for k, v in lone["steps"].items()},
        "overhead_per_step_s": round(overhead, 2),
        "runs_ok": sum(r["status"] == "SUCCESS" for r in runs),
    }


WRITER = """
import json, sys, time
from pathlib import Path
from mammo_dagster.core.store.db import Store
store, name = Store(Path(sys.argv[1]), timeout_s=600), sys.argv[2]
writes, rows = int(sys.argv[3]), int(sys.argv[4])
lat = []
for k in range(writes):
    t0 = time.perf_counter()
    store.run(lambda c: (c.execute("DELETE FROM bench_rows WHERE part = ?", [f"{name}-{k}"]),
                         c.executemany("INSERT INTO bench_rows VALUES (?, ?, ?)",
                                       [(f"{name}-{k}", i, "x" * 200) for i in range(rows)])))
    lat.append(time.perf_counter() - t0)
    time.sleep(0.05)  # a step computes between its writes
print(json.dumps(lat))
"""


def contention(folder: Path, writers: list[int], writes: int = 20, rows: int = 64) -> list[dict]:
    """Latency of one drop's index write (replace a partition's rows) through the store's
    retrying helper, with N processes writing at once: the cost of serializing DuckDB
    writes through one file instead of per-partition files merged downstream."""
    import subprocess

    from mammo_dagster.core.store.db import Store

    db = folder / "contention.duckdb"
    table = "CREATE TABLE IF NOT EXISTS bench_rows (part VARCHAR, i INTEGER, payload VARCHAR)"
    Store(db).run(lambda c: c.execute(table))
    out = []
    for n in writers:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(db), f"w{n}-{i}", str(writes), str(rows)],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i in range(n)
        ]
        lat = sorted(x for p in procs for x in json.loads(p.communicate()[0]))
        out.append({"writers": n, "p50_ms": round(1000 * lat[len(lat) // 2], 1),
                    "p95_ms": round(1000 * lat[int(len(lat) * 0.95)], 1),
                    "max_ms": round(1000 * lat[-1], 1)})  # fmt: skip
    return out


def write_doc(saved: dict) -> None:
    summary, runs, locks = saved["summary"], saved["runs"], saved["db_contention"]
    base = summary[0]["images_per_s"]
    first = next(iter(runs.values()))[0]
    repeat = len(next(iter(runs.values())))
    text = (
        f"{saved['drops']} drops ({first['images']} full-size images), median of {repeat}:\n\n"
        + table(
            ["configuration", "images/s", "vs default", "orchestration overhead per step"],
            [
                (
                    r["config"] + (" (the default)" if i == 0 else ""),
                    f"{r['images_per_s']:.2f}",
                    f"{r['images_per_s'] / base:.2f}×",
                    f"{r['overhead_per_step_s']:.2f} s",
                )
                for i, r in enumerate(summary)
            ],
        )  # fmt: skip
    )
    lone = [r for rs in runs.values() for r in rs if r.get("lone_images")]
    if lone:  # seconds one process spends per image inside the steps, median over configs
        per_image = statistics.median(
            sum(r["lone_run_inside_steps_s"].values()) / r["lone_images"] for r in lone
        )
        need = 1e6 / 36_000
        cores = need * per_image
        text += (
            f"\n\nInside the steps one process spends **{per_image:.2f} s per full-size "
            f"image** (index, thumbnail and prediction, fixed costs included): "
            f"{1 / per_image:.1f} images/s per core once drops are large enough to hide the "
            f"dispatch. 1 million images in 10 hours need {need:.1f} images/s sustained: "
            f"**{cores:.1f} busy cores**, {2 * cores:.1f} with a margin of 2 for JPEG 2000-heavy "
            "archives."
        )
    if saved.get("mean_file_mb"):
        mb = saved["mean_file_mb"]
        text += (
            f" Storage runs out before CPU: these files average {mb:.1f} MB, so 1 million are "
            f"~{mb:.0f} TB, and reading them in 10 hours takes ~{mb * 1e6 / 36_000:.0f} MB/s "
            "from the archive's storage."
        )
    text += (
        "\n\nOne drop's index write (64 rows, replacing a partition's rows) through the "
        "store's retrying helper, N processes writing at once, 20 writes each:\n\n"
        + table(
            ["writers", "p50", "p95", "max"],
            [
                (
                    r["writers"],
                    f"{r['p50_ms']:.0f} ms",
                    f"{r['p95_ms']:.0f} ms",
                    f"{r['max_ms']:.0f} ms",
                )
                for r in locks
            ],
        )  # fmt: skip
    )
    write_section("scale.md", "bench_scale", text, when=saved.get("measured"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drops", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--decode-workers", type=int, default=2,
                    help="processes per step in the single-machine baseline")  # fmt: skip
    ap.add_argument("--doc-only", action="store_true", help="rewrite the page from the results")
    args = ap.parse_args()
    if args.doc_only:
        write_doc(json.loads((RESULTS / "scale.json").read_text()))
        return 0
    ensure_data()
    configs = [
        (f"multiprocess ({args.decode_workers} procs/step)", 0, args.decode_workers),
        ("multiprocess (1 proc/step)", 0, 1),
        ("celery, 1 worker", 1, 1),
        ("celery, 2 workers", 2, 1),
    ]
    rows: dict[str, list[dict]] = {c[0]: [] for c in configs}
    for rep in range(args.repeat):
        for name, workers, decode in configs:  # interleaved: the machine is shared
            with tempfile.TemporaryDirectory(dir=DATA) as tmp:
                row = one_config(name, workers, args.drops, decode, Path(tmp))
            rows[name].append(row)
            print(f"  [{rep + 1}/{args.repeat}] {name:32s} {row['images_per_s']:6.2f} img/s, "
                  f"overhead {row['overhead_per_step_s']:.2f} s/step", flush=True)  # fmt: skip
    base = statistics.median(r["images_per_s"] for r in rows[configs[0][0]])
    print(f"\n{args.drops} drops, {rows[configs[0][0]][0]['images']} full-size images, "
          f"median of {args.repeat}:")  # fmt: skip
    print(f"{'configuration':34s} {'img/s':>7s} {'vs default':>10s} {'overhead/step':>14s}")
    summary = []
    for name, *_ in configs:
        ips = statistics.median(r["images_per_s"] for r in rows[name])
        ovh = statistics.median(r["overhead_per_step_s"] for r in rows[name])
        summary.append({"config": name, "images_per_s": ips, "overhead_per_step_s": ovh})
        print(f"{name:34s} {ips:7.2f} {ips / base:9.2f}x {ovh:12.2f} s")
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        locks = contention(Path(tmp), [1, 2, 4, 8])
    print("\none drop's index write (64 rows) through the store, N processes at once:")
    for r in locks:
        print(f"  {r['writers']} writer(s): p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
              f"max {r['max_ms']} ms")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    files = [f for f in SOURCE.rglob("*") if f.is_file()]
    saved = {
        "drops": args.drops,
        "mean_file_mb": sum(f.stat().st_size for f in files) / len(files) / 1e6,
        "summary": summary,
        "runs": rows,
        "db_contention": locks,
        "measured": measured(),
    }
    (RESULTS / "scale.json").write_text(json.dumps(saved, indent=2))
    write_doc(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
