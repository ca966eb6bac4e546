"""The fuzzing corpus (tests/fuzz.py) through the library paths: every mutant ends as
rendered, rendered with warnings, or one typed error; no good file is lost.
The command lines and the Dagster ingest get the larger corpus in
tests/integration/test_fuzz_cli.py (slow)."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammo_dagster.core.imaging.batch import thumbnail_folder
from mammo_dagster.core.imaging.dicom import Failure
from mammo_dagster.core.imaging.index import index_file
from mammo_dagster.core.imaging.pool import run_guarded
from mammo_dagster.core.prediction.predict import decode_file
from tests.fuzz import KNOWN, MUTATIONS, SAID, SYNTAXES, make_corpus

#: Every mutation applied to every seed, then seeded choices: ~5 s on 2 cores.
FAST_MUTANTS = 300
KINDS = {f.value for f in Failure}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("fuzz")
    seeds, mutants = make_corpus(folder, FAST_MUTANTS, seed=18)
    return folder, seeds, mutants


def test_the_corpus_is_deterministic_and_covers_every_syntax_and_mutation(
    tmp_path: Path, corpus
) -> None:
    folder, seeds, mutants = corpus
    assert {m.op for m in mutants} == set(MUTATIONS)
    assert {s.name.split("-")[0] for s in seeds} >= {ts.split("-")[0] for ts in SYNTAXES}
    _seeds, again = make_corpus(tmp_path, 12, seed=18)
    for a, b in zip(mutants[:12], again, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes()


def _one_line(text: str | None) -> bool:
    return text is None or (text.strip() != "" and "\n" not in text and "Traceback" not in text)


def test_every_mutant_is_a_row_and_every_good_file_renders(tmp_path: Path, corpus) -> None:
    folder, seeds, mutants = corpus
    out = tmp_path / "thumbs"
    rows = thumbnail_folder(folder, out, size=64, workers=2)
    by_file: dict[str, list] = {}
    for r in rows:
        by_file.setdefault(r.path, []).append(r)
    assert len(by_file) == len(seeds) + len(mutants) + len(KNOWN)  # none lost, none twice
    for seed in seeds:  # the good files: clean renders, whatever their neighbours did
        got = by_file[f"good/{seed.name}"]
        assert [(r.status, r.error, r.warnings) for r in got] == [("ok", None, None)] * len(got)
    outcomes = Counter()
    for path, got in by_file.items():
        for r in got:
            assert r.status in ("ok", "error"), (path, r)
            assert _one_line(r.error) and _one_line(r.warnings), (path, r)
            if r.status == "error":
                assert r.error_kind in KINDS, (path, r)
                assert not r.error.startswith("unexpected"), (path, r)  # a bug of ours
            else:
                with Image.open(out / r.thumbnail) as im:
                    a = np.asarray(im)
                assert a.max() > a.min(), (path, "an all-one-gray 'success'")
            outcomes["error" if r.error_kind else "warned" if r.warnings else "ok"] += 1
    assert outcomes["error"] and outcomes["ok"] and outcomes["warned"], outcomes
    known = {name: by_file[f"known/{name}.dcm"][0] for name in KNOWN}
    assert {name: (r.error_kind, r.warnings) for name, r in known.items()} == {
        "rle-panic": ("decode_error", known["rle-panic"].warnings),
        "gdcm-abort": ("decode_error", None),
        "j2k-header-smashed": ("decode_error", known["j2k-header-smashed"].warnings),
        "huge-claim": ("too_large", None),
        "implicit-claiming-explicit": (None, SAID),
        "frames-99999999": ("too_large", None),
        "frames-1e9": ("too_large", known["frames-1e9"].warnings),
        "intercept-nan": ("invalid_header", None),
        "intercept-1e308": ("invalid_header", None),
        "slope-0": ("invalid_header", None),
        "pixel-representation-2": ("invalid_header", None),
    }
    assert "PanicException: index out of bounds" in known["rle-panic"].error
    assert "index out of bounds: the len is 2560" in known["rle-panic"].warnings  # Rust's
    assert known["gdcm-abort"].error.startswith(
        "codec crashed (SIGABRT): terminate called after throwing an instance of 'gdcm::"
    )


def test_the_index_and_the_predict_decoder_give_one_typed_answer_per_mutant(corpus) -> None:
    folder, seeds, mutants = corpus
    files = seeds + [m.path for m in mutants] + sorted((folder / "known").iterdir())
    for path in files:  # header only: pure Python, in this process
        rows = index_file(path, folder, "fuzz")
        assert 1 <= len(rows) <= 2, path  # the seeds have at most 2 frames
        assert all(r.status in ("ok", "error") and _one_line(r.error) for r in rows), path
        assert all(r.error_kind is None or r.error_kind in KINDS for r in rows), path
    answers: dict[Path, list] = {}
    run_guarded(
        files,
        partial(decode_file, root=folder, size=32, thumb=32),
        lambda path, frames: answers.__setitem__(path, frames),
        lambda path, kind, reason: answers.__setitem__(path, [(kind.value, reason)]),
        workers=2,
    )
    assert set(answers) == set(files)
    for path, frames in answers.items():
        for f in frames:
            if isinstance(f, tuple):  # the worker died or timed out
                assert f[0] in KINDS and _one_line(f[1]), path
            else:
                assert (f.image is None) == (f.error_kind is not None), path
                assert _one_line(f.error) and _one_line(f.warnings), path
    for seed in seeds:
        assert all(f.image is not None and f.warnings is None for f in answers[seed]), seed
