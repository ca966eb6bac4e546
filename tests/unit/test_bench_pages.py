"""The benchmark pages: each script writes its own, so numbers and code can't drift."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
DOCS = ROOT / "docs" / "benchmarks"

_spec = importlib.util.spec_from_file_location("pages", BENCH / "pages.py")
pages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pages)


def test_a_section_is_replaced_between_its_markers_and_the_prose_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(pages, "DOCS", tmp_path)
    page = tmp_path / "p.md"
    page.write_text(
        "# Title\n\nprose before\n\n<!-- bench_x -->\nold 1.0\n<!-- /bench_x -->\n\nafter\n"
    )
    pages.write_section("p.md", "bench_x", "| a |\n|---|\n| 2.0 |", when="2026-01-01, here")
    text = page.read_text()
    assert "old 1.0" not in text and "| 2.0 |" in text
    assert text.startswith("# Title\n\nprose before\n\n<!-- bench_x -->\n")
    assert text.endswith("<!-- /bench_x -->\n\nafter\n")
    assert "*Measured by `benchmarks/bench_x.py` on 2026-01-01, here; rerun it" in text
    pages.write_section("p.md", "bench_x", "third", part="small")  # a second section
    assert "<!-- bench_x:small -->" in page.read_text() and "| 2.0 |" in page.read_text()
    assert page.read_text().count("<!-- /bench_x") == 2


def test_every_benchmark_writes_its_page() -> None:
    """Every script is listed in the index and names the page it writes; that page has
    the script's markers, or the script writes it whole."""
    index = (DOCS / "README.md").read_text()
    for script in sorted(BENCH.glob("bench_*.py")):
        source = script.read_text()
        assert f"`{script.name}`" in index, f"{script.name} is not in docs/benchmarks/README.md"
        written = set(re.findall(r"write_section\(\s*\"([\w.]+\.md)\"", source))
        whole = set(re.findall(r"docs\" / \"benchmarks\" / \"([\w.]+\.md)\"", source))
        assert written or whole, f"{script.name} writes no page"
        for page in written:
            assert f"<!-- {script.stem}" in (DOCS / page).read_text(), (script.name, page)
        for page in whole:
            assert (DOCS / page).is_file(), (script.name, page)


def test_the_machine_stamp_names_the_vector_units() -> None:
    """int8 speed hangs on VNNI: a page must say whether the CPU that measured it had it."""
    assert pages.vector_units({"avx2", "avx512f", "avx512_vnni"}) == "AVX-512 VNNI"
    assert pages.vector_units({"avx2", "avx512f"}) == "AVX-512, no VNNI"
    assert pages.vector_units({"avx2", "avx_vnni"}) == "AVX2 VNNI"
    assert pages.vector_units({"avx2", "fma"}) == "AVX2, no VNNI"
    assert pages.vector_units({"sse4_2"}) == "no AVX2, no VNNI"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "flags" in cpuinfo.read_text():  # Linux: this machine's are named
        assert re.search(r"\((AVX|no AVX)[^)]*\), \d+ cores", pages.machine())
