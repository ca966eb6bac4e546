"""The benchmarks' docs pages: each script writes its own tables, so numbers can't drift.

A script owns the part of `docs/benchmarks/PAGE` between `<!-- NAME -->` and
`<!-- /NAME -->`: its tables and the sentences that quote them, stamped with the
date and the machine. What stands outside the markers explains and quotes no number.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
RESULTS = Path(__file__).resolve().parent / "results"


def vector_units(flags: set[str]) -> str:
    """The CPU's widest vector and int8 dot-product units, from its /proc/cpuinfo flags:
    ONNX Runtime's int8 speed depends on them more than on anything else (VNNI)."""
    width = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    return f"{width}{' VNNI' if vnni else ', no VNNI'}"


def machine() -> str:
    """This machine in a few words: CPU model, vector units, cores, load when the run
    ended."""
    model, units = platform.processor() or platform.machine(), ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        for line in lines:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
        units = f" ({vector_units(set(flags))})" if flags else ""
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}{units}, {os.cpu_count()} cores, load average {load:.1f}"


def bold(text: str, when: bool = True) -> str:
    """`text` in bold where `when`."""
    return f"**{text}**" if when else text


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def measured() -> str:
    """When and where a run measured: saved with its results, quoted by its page."""
    return f"{datetime.date.today().isoformat()}, {machine()}"


def write_section(
    page: str, script: str, text: str, part: str = "", when: str | None = None
) -> Path:
    """Put `text` between the markers of SCRIPT (and PART, where one script writes several
    sections) in docs/benchmarks/PAGE, appended if they are absent; `when`: the run's
    `measured()` (default: now)."""
    path = DOCS / page
    name = f"{script}:{part}" if part else script
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    stamp = f"*Measured by `benchmarks/{script}.py` on {when or measured()}; rerun it to refresh.*"
    block = f"{begin}\n{stamp}\n\n{text.strip()}\n{end}"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = (old.rstrip() + "\n\n" if old else "") + block + "\n"
    path.write_text(new)
    return path
