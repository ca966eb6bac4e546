"""Which VOI a header asks for (PS3.3 C.11.2): windows with their VOI LUT Function,
a VOI LUT Sequence's table, which of several to use, and an automatic window from the
breast's own values when the header gives none; and the window function itself."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

AUTO_WINDOW_PERCENTILES = (1.0, 99.5)
AIR_FRACTION = 0.05


@dataclass(frozen=True)
class Voi:
    """The VOI transform chosen for an image."""

    kind: str  # "window", "lut" or "auto"
    function: str = "LINEAR"
    center: float = 0.0
    width: float = 1.0
    index: int = 0

    def describe(self) -> str:
        if self.kind == "lut":
            return f"VOI LUT Sequence item {self.index}"
        src = "auto percentile" if self.kind == "auto" else f"window {self.index}"
        return f"{src}: {self.function} c={self.center:g} w={self.width:g}"


def _values(elem: object) -> list[float]:
    if elem is None:
        return []
    seq = elem if isinstance(elem, MultiValue | list | tuple) else [elem]
    out = []
    for v in seq:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def voi_source(ds: Dataset) -> Dataset:
    """The dataset holding the VOI: top level, or the shared functional group."""
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        return ds
    for group in ds.get("SharedFunctionalGroupsSequence") or []:
        for item in group.get("FrameVOILUTSequence") or []:
            return item
    return ds


def window_value(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """The standard's VOI function, scaled to [0, 1] (PS3.3 C.11.2.1.2/C.11.2.1.3)."""
    x = np.asarray(x, dtype=np.float64)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR":
        center, width = center - 0.5, width - 1.0
    if width <= 0:  # LINEAR with width 1: a threshold at the center
        return (x > center).astype(np.float64)
    y = (x - center) / width + 0.5
    y[x <= center - width / 2] = 0.0
    y[x > center + width / 2] = 1.0
    return y


def choose_voi(ds: Dataset, index: int = 0) -> Voi | None:
    """The header's VOI (None when it has none usable): LUT Sequence first, then windows.

    `index` picks among multi-valued windows / LUT items (the first by default;
    out-of-range falls back to the first). Invalid windows (width <= 0, or < 1 for
    LINEAR) are skipped in favour of the next valid one.
    """
    src = voi_source(ds)
    luts = src.get("VOILUTSequence") or []
    if luts:
        i = index if index < len(luts) else 0
        try:
            lut_table(luts[i], ds)
            return Voi(kind="lut", index=i)
        except (ValueError, TypeError, AttributeError, KeyError):
            pass  # unusable LUT: fall back to the windows, then to an automatic window
    centers, widths = _values(src.get("WindowCenter")), _values(src.get("WindowWidth"))
    function = str(src.get("VOILUTFunction", "") or "LINEAR").upper().strip()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    pairs = list(zip(centers, widths, strict=False))
    order = (
        [index] + [i for i in range(len(pairs)) if i != index]
        if index < len(pairs)
        else list(range(len(pairs)))
    )
    for i in order:
        c, w = pairs[i]
        if np.isfinite(c) and np.isfinite(w) and w >= (1 if function == "LINEAR" else 1e-9):
            return Voi(kind="window", function=function, center=c, width=w, index=i)
    return None


def lut_table(item: Dataset, ds: Dataset) -> tuple[np.ndarray, int, int]:
    """(entries, first mapped value, output bits) of a VOI LUT Sequence item.

    Written here rather than with pydicom's ``apply_voi`` because LUTData may be
    US or OW (raw bytes, in the file's byte order) and pydicom refuses OW when a
    dataset has no file meta. Raises ValueError for an unusable item.

    The output range is the descriptor's bit depth, except for a known writer
    quirk: 16 bits declared for a table that uses no more than 12 (at least 4 bits
    never set), where the real depth is what the table holds.
    """
    n, first, declared = (int(v) for v in item.LUTDescriptor)
    n = n or 65536
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    may_be_negative = int(ds.get("PixelRepresentation", 0)) == 1 or intercept < 0 or slope < 0
    if may_be_negative and first >= 32768:
        first -= 65536  # an SS first mapped value written as US (PS3.3 C.11.2.1.1)
    data = item.get("LUTData")
    if data is None:
        raise ValueError("VOI LUT item has no LUT Data")
    if isinstance(data, bytes):
        meta = getattr(ds, "file_meta", None)
        big = str(meta.get("TransferSyntaxUID", "")) == "1.2.840.10008.1.2.2" if meta else False
        if declared <= 8 and len(data) in (n, n + 1):
            table = np.frombuffer(data[:n], dtype=np.uint8)
        else:
            table = np.frombuffer(data[: len(data) // 2 * 2], dtype=">u2" if big else "<u2")
    else:
        table = np.asarray(data if isinstance(data, MultiValue | list) else [data])
    table = table[:n].astype(np.float64)
    if table.size == 0:
        raise ValueError("VOI LUT item has an empty table")
    bits = declared
    used = int(table.max()).bit_length()
    if declared >= 16 and used <= declared - 4:
        bits = max(used, 8)
    return table, first, bits


def auto_window(modality: np.ndarray, inverse_air: bool, padding: np.ndarray | None = None) -> Voi:
    """A robust linear window from breast pixels (see module docstring)."""
    v = modality if padding is None else modality[~padding]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Voi(kind="auto", function="LINEAR_EXACT", center=0.5, width=1.0)
    lo_all, hi_all = np.percentile(v, (0.1, 99.9))
    cut = AIR_FRACTION * (hi_all - lo_all)
    breast = v[v < hi_all - cut] if inverse_air else v[v > lo_all + cut]
    if breast.size < 0.01 * v.size:
        breast = v
    lo, hi = np.percentile(breast, AUTO_WINDOW_PERCENTILES)
    if hi <= lo:
        lo, hi = float(v.min()), float(v.max()) + 1.0
    return Voi(kind="auto", function="LINEAR_EXACT", center=(lo + hi) / 2, width=hi - lo)
