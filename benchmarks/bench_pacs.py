"""PACS in and out, on a real Orthanc (Debian's, with its DICOMweb plugin), in one run.

For N and 4N synthetic studies (mixed vendors and transfer syntaxes) uploaded to a
fresh Orthanc on loopback:
- pull: `mammo pacs pull` (QIDO-RS + WADO-RS, 4 requests in flight) into a drop:
  studies/s and instances/s;
- end to end from the PACS: pull -> index -> thumbnails, images/s;
- end to end from a folder: the same studies already on disk -> index -> thumbnails;
- write-back: KOS + SR for every study (all flagged by a stand-in model), STOW-RS,
  documents/s;
each step in a fresh process, reporting its own peak RSS (which must not grow from N to
4N beyond what the largest instance explains: each of the 4 workers holds one instance,
a few copies of it, at a time). Prediction itself is left out: it is the
same on both paths (bench_predict.py measures it).

    python benchmarks/bench_pacs.py [--studies 10] [--size small|full] [--doc-only]

Results go to results/pacs_SIZE.json; the table to docs/benchmarks/pacs.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from pages import RESULTS, measured, table, write_section  # noqa: E402

STEP = r"""
import json, sys, time
from pathlib import Path
import dicomweb_client, highdicom, pydicom  # imports outside the timed part
from mammo_dagster.core.imaging.batch import thumbnail_folder
from mammo_dagster.core.home import Home
from mammo_dagster.core.imaging.index import ingest_drop
from mammo_dagster.core.pacs.pull import pull
from mammo_dagster.core.pacs.source import PacsSource
from mammo_dagster.core.pacs.push import push
step, home, arg = sys.argv[1], Home(Path(sys.argv[2])), sys.argv[3]
t0 = time.perf_counter()
out = {}
if step in ("pull", "e2e-pacs"):
    r = pull(home, PacsSource.from_env(), drop=arg, workers=4)
    out.update(studies=r.studies, instances=r.instances, failed=r.failed)
    out["pull_s"] = time.perf_counter() - t0
if step in ("e2e-pacs", "e2e-folder"):
    rows = ingest_drop(home, arg, workers=2)
    thumbnail_folder(home.drop(arg), home.thumbnails, size=256, workers=2)
    out["images"] = sum(r.status == "ok" for r in rows)
if step == "push":
    r = push(home, source=PacsSource.from_env())
    out.update(sent=r.sent, documents=r.objects, failed=r.failed)
out["seconds"] = time.perf_counter() - t0
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through exec
hwm = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")]
out["peak_rss_mb"] = int(hwm[0].split()[1]) / 1024
print(json.dumps(out))
"""


def step(name: str, home: Path, arg: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", STEP, name, str(home), arg], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def flag_everything(home: Path) -> None:
    """A stand-in current model that flags every image (speed does not depend on it)."""
    from mammo_dagster.core.model.modelstore import CurrentModel, ModelCard, write_current
    from mammo_dagster.core.store.db import Store

    (home / "models" / "m0001").mkdir(parents=True)
    ModelCard(input_size=64, thresholds={"biopsy": 0.5, "mag": 0.5}).write(
        home / "models" / "m0001"
    )
    write_current(home / "models", CurrentModel("m0001", 0, 0))
    store = Store(home / "mammo.duckdb")
    store.run(
        lambda c: c.execute(
            "INSERT INTO image_predictions SELECT drop_name, sop_instance_uid, frame, "
            "'m0001', 0.9, 0.1, true, false, now() FROM indexed_frames"
        )
    )


def run(studies: int, size: str, root: Path) -> dict:
    from mammo_dagster.core.imaging.batch import iter_files
    from mammo_dagster.core.synthetic.archive import generate_archive
    from tests.orthanc import PASSWORD, USER, running

    archive = root / "archive"
    generate_archive(archive, studies=studies, seed=studies, size=size,
                     ground_truth=root / "truth.csv")  # fmt: skip
    with running(root / "orthanc") as server:
        for f in iter_files(archive):
            server.upload(f)
        env = os.environ | {
            "MAMMO_DICOMWEB_URL": server.url, "MAMMO_DICOMWEB_USER": USER,
            "MAMMO_DICOMWEB_PASSWORD": PASSWORD, "MAMMO_PATIENT_SALT": "bench",
            "PYTHONPATH": str(ROOT),
        }  # fmt: skip
        pulled = step("pull", root / "pull", "p", env)
        pacs = step("e2e-pacs", root / "pacs", "p", env)
        home = root / "folder"
        (home / "incoming").mkdir(parents=True)
        os.symlink(archive, home / "incoming" / "f")
        folder = step("e2e-folder", home, "f", env)
        flag_everything(root / "pacs")
        pushed = step("push", root / "pacs", "-", env)
    return {
        "studies": studies,
        "instances": pulled["instances"],
        "largest_instance_mb": round(max(f.stat().st_size for f in iter_files(archive)) / 2**20),
        "pull_studies_per_s": round(pulled["studies"] / pulled["seconds"], 1),
        "pull_instances_per_s": round(pulled["instances"] / pulled["seconds"], 1),
        "pull_peak_rss_mb": round(pulled["peak_rss_mb"]),
        "e2e_pacs_images_per_s": round(pacs["images"] / pacs["seconds"], 1),
        "e2e_folder_images_per_s": round(folder["images"] / folder["seconds"], 1),
        "e2e_pacs_peak_rss_mb": round(pacs["peak_rss_mb"]),
        "push_documents_per_s": round(pushed["documents"] / pushed["seconds"], 1),
        "push_studies": pushed["sent"],
        "push_peak_rss_mb": round(pushed["peak_rss_mb"]),
    }


def write_doc(results: list[dict], size: str, when: str | None = None) -> None:
    body = [
        (size, r["studies"], r["instances"], r["largest_instance_mb"] or "<1",
         r["pull_studies_per_s"], r["pull_instances_per_s"], f"{r['pull_peak_rss_mb']} MB",
         r["e2e_pacs_images_per_s"], r["e2e_folder_images_per_s"],
         r["push_documents_per_s"], f"{r['push_peak_rss_mb']} MB")
        for r in results
    ]  # fmt: skip
    small, large = results[0], results[-1]
    text = (
        table(
            [
                "size",
                "studies",
                "instances",
                "largest instance MB",
                "pull studies/s",
                "pull instances/s",
                "pull peak RSS",
                "e2e PACS img/s",
                "e2e folder img/s",
                "push documents/s",
                "push peak RSS",
            ],
            body,
        )  # fmt: skip
        + f"\n\nFrom {small['instances']} to {large['instances']} instances the pull's peak "
        f"memory goes {small['pull_peak_rss_mb']} → {large['pull_peak_rss_mb']} MB, the "
        f"push's {small['push_peak_rss_mb']} → {large['push_peak_rss_mb']} MB; end to end from "
        f"the PACS runs at {large['e2e_pacs_images_per_s'] / large['e2e_folder_images_per_s']:.2f}"
        f"× the folder path ({large['studies']} studies)."
    )
    write_section("pacs.md", "bench_pacs", text, part=size, when=when)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=10)
    p.add_argument("--size", choices=["small", "full"], default="small")
    p.add_argument("--doc-only", action="store_true", help="rewrite the page from the results")
    args = p.parse_args()
    if args.doc_only:
        saved = json.loads((RESULTS / f"pacs_{args.size}.json").read_text())
        write_doc(saved["rows"], args.size, saved["measured"])
        return
    results = []
    for n in (args.studies, 4 * args.studies):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run(n, args.size, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    saved = {"rows": results, "measured": measured()}
    (RESULTS / f"pacs_{args.size}.json").write_text(json.dumps(saved, indent=1))
    write_doc(results, args.size, saved["measured"])


if __name__ == "__main__":
    main()
