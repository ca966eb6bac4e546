"""Hostile input: a seeded fuzzing corpus through `mammo thumbnails` and `mammo predict`.

Makes `--n` mutants of small valid files of every transfer syntax and vendor profile
(tests/fuzz.py: byte flips, truncations, damaged offset tables, swapped transfer
syntaxes and VRs, absurd lengths, dimensions, frame counts and header values) and runs
them through the two batch commands, each in a wrapper process that reports the peak
resident memory of the command's largest process (its workers included). Counts:
rendered, rendered with warnings, typed errors by kind, tracebacks on stderr, non-zero
exits, hangs (``timeout`` rows), good files lost; and the peak memory on the seeds
alone beside the peak on the whole corpus (the limits in `core.imaging.limits` bound it
whatever the headers claim).

Results go to results/hostile.json; the table to docs/benchmarks/hostile.md.

    python benchmarks/bench_hostile.py [--n 1000] [--seed 18] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz import KNOWN, MUTATIONS, make_corpus  # noqa: E402

RESULTS = HERE / "results"
DOC = ROOT / "docs" / "benchmarks" / "hostile.md"
#: Runs a command and prints the peak RSS (KiB) of the largest process it waited for.
PEAK = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc, file=sys.stderr)"
)


def run(args: list[str]) -> tuple[int, str, float, float]:
    """(exit status, stderr, seconds, peak MiB) of `mammo ARGS`."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PEAK, sys.executable, "-m", "mammo_dagster.cli", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    elapsed = time.perf_counter() - t0
    *lines, last = out.stderr.rstrip("\n").split("\n")
    peak_kib, rc = (int(x) for x in last.split())
    return rc, "\n".join(lines), elapsed, peak_kib / 1024


def tiny_model(folder: Path) -> Path:
    """An untrained ONNX model (mean gray level through a sigmoid) with a card."""
    from tests.integration.test_fuzz_cli import _tiny_model

    return _tiny_model(folder)


def outcome(row: dict) -> str:
    if row.get("error_kind"):
        return f"error: {row['error_kind']}"
    return "rendered with warnings" if row.get("warnings") else "rendered"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        seeds, mutants = make_corpus(corpus, args.n, args.seed)
        good = [str(s.relative_to(corpus)) for s in seeds]
        files = len(seeds) + len(mutants) + len(KNOWN)
        w = ["--workers", str(args.workers)]
        seeds_peak = run(["thumbnails", "-q", str(corpus / "good"), str(tmp / "g"), *w])[3]
        rc, err, secs, peak = run(["thumbnails", "-q", str(corpus), str(tmp / "t"), *w])
        rows = list(csv.DictReader((tmp / "t" / "thumbnails.csv").open()))
        by_file: dict[str, list[dict]] = {}
        for r in rows:
            by_file.setdefault(r["path"], []).append(r)
        per_file = Counter(
            outcome(next((r for r in rs if r["error_kind"]), rs[0])) for rs in by_file.values()
        )
        lost = [g for g in good if any(r["status"] != "ok" for r in by_file.get(g, [{}]))]
        by_op = {op: Counter() for op in MUTATIONS}
        for m in mutants:
            rs = by_file[str(m.path.relative_to(corpus))]
            by_op[m.op][outcome(next((r for r in rs if r["error_kind"]), rs[0]))] += 1
        known = {}
        for name in KNOWN:
            r = by_file[f"known/{name}.dcm"][0]
            known[name] = f"{r['error_kind']}: {r['error']}" if r["error_kind"] else outcome(r)
        model = tiny_model(tmp / "model")
        out = tmp / "p" / "studies.csv"
        prc, perr, psecs, ppeak = run(
            ["predict", "-q", "--input-dir", str(corpus), "--output", str(out), "--model",
             str(model), *w]
        )  # fmt: skip
        images = list(csv.DictReader(out.with_name("studies.csv.images.csv").open()))
        errors = list(csv.DictReader(out.with_name("studies.csv.errors.csv").open()))
        seen = {r["path"] for r in images} | {r["path"] for r in errors}
        result = {
            "mutants": len(mutants),
            "files": files,
            "seed": args.seed,
            "workers": args.workers,
            "thumbnails": {
                "exit": rc,
                "tracebacks": err.count("Traceback"),
                "stderr_lines": len([x for x in err.splitlines() if x]),
                "seconds": round(secs, 1),
                "files_per_s": round(files / secs, 1),
                "per_file": dict(per_file.most_common()),
                "crashed": sum("codec crashed" in (r["error"] or "") for r in rows),
                "timeouts": sum(r["error_kind"] == "timeout" for r in rows),
                "files_with_rows": len(by_file),
                "good_lost": lost,
                "peak_mib_seeds": round(seeds_peak, 1),
                "peak_mib_corpus": round(peak, 1),
                "by_mutation": {op: dict(c.most_common()) for op, c in by_op.items()},
                "known": known,
            },
            "predict": {
                "exit": prc,
                "tracebacks": perr.count("Traceback"),
                "seconds": round(psecs, 1),
                "files_with_rows": len(seen),
                "good_lost": [g for g in good if g not in {r["path"] for r in images}],
                "peak_mib_corpus": round(ppeak, 1),
            },
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hostile.json").write_text(json.dumps(result, indent=2))
    DOC.write_text(markdown(result))
    print(json.dumps(result, indent=2))


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


HEADER = [
    "command", "exit", "tracebacks on stderr", "files with rows", "good files lost",
    "codec crashes contained", "hangs (timeout rows)", "peak memory: seeds only / corpus",
    "time",
]  # fmt: skip


def markdown(r: dict) -> str:
    t, p = r["thumbnails"], r["predict"]
    table = [
        _row(HEADER),
        _row(["---"] * len(HEADER)),
        _row([
            "`mammo thumbnails`", t["exit"], t["tracebacks"],
            f"{t['files_with_rows']} of {r['files']}", len(t["good_lost"]), t["crashed"],
            t["timeouts"], f"{t['peak_mib_seeds']} / {t['peak_mib_corpus']} MiB",
            f"{t['seconds']} s",
        ]),
        _row([
            "`mammo predict`", p["exit"], p["tracebacks"],
            f"{p['files_with_rows']} of {r['files']}", len(p["good_lost"]), "", "",
            f"{p['peak_mib_corpus']} MiB (corpus)", f"{p['seconds']} s",
        ]),
    ]  # fmt: skip
    kinds = [_row([k, v]) for k, v in t["per_file"].items()]
    ops = [
        _row([op, ", ".join(f"{k} {v}" for k, v in c.items())])
        for op, c in t["by_mutation"].items()
    ]
    known = [_row([name, f"`{what}`"]) for name, what in t["known"].items()]
    nl = "\n"
    return f"""# Hostile input benchmark (`benchmarks/bench_hostile.py`)

Generated by the benchmark; do not edit by hand.

{r["mutants"]} mutants (seed {r["seed"]}) of {r["files"] - r["mutants"] - len(t["known"])} small
valid files (every transfer syntax, every vendor profile; tests/fuzz.py), the seeds
themselves, and {len(t["known"])} known hostile files (the defects of issue 18);
{r["workers"]} workers, this 2-core machine.

{nl.join(table)}

Peak memory is the largest single process of the command (a worker or the main
process), from `getrusage(RUSAGE_CHILDREN)`.

Each file's outcome (`mammo thumbnails`; a file's first error, else how it rendered):

| outcome | files |
|---|---|
{nl.join(kinds)}

The known hostile files:

| file | outcome |
|---|---|
{nl.join(known)}

By mutation:

| mutation | outcomes |
|---|---|
{nl.join(ops)}
"""


if __name__ == "__main__":
    main()
