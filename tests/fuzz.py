"""A seeded fuzzing corpus: mutants of small valid files of every transfer syntax and
vendor profile, for the hostile-input tests (tests/unit/test_fuzz.py,
tests/integration/test_fuzz_cli.py) and benchmarks/bench_hostile.py.

`make_corpus(folder, n, seed)` writes the unmutated seeds (``good/``, which must
always render cleanly) and `n` mutants (``mutants/``), each made by one of
`MUTATIONS` from a seed chosen by the seeded generator: the same seed gives the same
bytes. Mutations are what archives and attackers produce: byte flips in the header
and in the pixel data, truncations, damaged offset tables and fragment lengths,
swapped transfer syntax UIDs and VRs, absurd element lengths, and absurd header
values (dimensions, frame counts, rescale, bit depths, photometric).

    python -m tests.fuzz FOLDER [--n 300] [--seed 18]
"""

from __future__ import annotations

import argparse
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from mammo_dagster.core.imaging.dicom_write import TRANSFER_SYNTAXES
from mammo_dagster.core.imaging.vendors import VENDOR_PROFILES
from tests.factory import make_file

#: Seed syntaxes: every one `dicom_write` encodes, plus implicit VR and deflated.
SYNTAXES = (*TRANSFER_SYNTAXES, "implicit", "deflated")
_EXTRA = {"implicit": ImplicitVRLittleEndian, "deflated": DeflatedExplicitVRLittleEndian}
ROWS, COLS = 40, 32
#: UIDs a swapped transfer syntax may claim (ours, and ones we don't decode).
SWAP_UIDS = [str(u) for u in TRANSFER_SYNTAXES.values()] + [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.100",
    "1.2.3.4.5",
]
VRS = [b"US", b"SS", b"IS", b"DS", b"OB", b"OW", b"UN", b"SQ", b"UT", b"CS", b"LO", b"FD", b"AT"]
#: Absurd header values: (keyword, VR, value as written).
ABSURD: list[tuple[str, str, str | int | float]] = [
    ("Rows", "US", 65535),
    ("Columns", "US", 65535),
    ("Rows", "US", 0),
    ("NumberOfFrames", "IS", "1000000"),
    ("NumberOfFrames", "IS", "99999999"),
    ("NumberOfFrames", "IS", "1e9"),
    ("NumberOfFrames", "IS", "0"),
    ("NumberOfFrames", "IS", "-1"),
    ("NumberOfFrames", "IS", "SIEMENS"),
    ("NumberOfFrames", "IS", "3"),
    ("PixelRepresentation", "US", 2),
    ("RescaleSlope", "DS", "0"),
    ("RescaleSlope", "DS", "nan"),
    ("RescaleSlope", "DS", "inf"),
    ("RescaleSlope", "DS", "1,5"),
    ("RescaleIntercept", "DS", "nan"),
    ("RescaleIntercept", "DS", "1e308"),
    ("BitsStored", "US", 0),
    ("BitsStored", "US", 17),
    ("BitsAllocated", "US", 12),
    ("BitsAllocated", "US", 32),
    ("BitsAllocated", "US", 8),
    ("HighBit", "US", 40),
    ("SamplesPerPixel", "US", 3),
    ("PhotometricInterpretation", "CS", "RGB"),
    ("PhotometricInterpretation", "CS", "GARBAGE"),
    ("WindowWidth", "DS", "0"),
    ("WindowWidth", "DS", "-5"),
    ("WindowCenter", "DS", "1e308"),
    ("WindowWidth", "DS", "nan"),
    ("VOILUTFunction", "CS", "XYZ"),
    ("PixelPaddingValue", "US", 65535),
    ("ImagerPixelSpacing", "DS", "0\\0"),
    ("EstimatedRadiographicMagnificationFactor", "DS", "inf"),
]


@dataclass(frozen=True)
class Mutant:
    path: Path
    seed: str  # the seed file's name
    op: str  # the mutation
    detail: str


def seed_files(folder: Path) -> list[Path]:
    """Small valid files: every syntax, vendors in turn, plus two 2-frame files."""
    folder.mkdir(parents=True, exist_ok=True)
    vendors = list(VENDOR_PROFILES)
    out = []
    for i, ts in enumerate(SYNTAXES):
        vendor = vendors[i % len(vendors)]
        bits = VENDOR_PROFILES[vendor].bits_stored
        px = _pixels(bits, i)
        path = folder / f"{ts}-{vendor}.dcm"
        make_file(path, px, vendor, "explicit" if ts in _EXTRA else ts, tag=f"fuzz-{ts}")
        if ts in _EXTRA:
            ds = pydicom.dcmread(path)
            ds.file_meta.TransferSyntaxUID = _EXTRA[ts]
            ds.save_as(path, enforce_file_format=True)
        out.append(path)
    for ts, vendor in (("explicit", "hologic"), ("j2k", "ge")):
        bits = VENDOR_PROFILES[vendor].bits_stored
        px = np.stack([_pixels(bits, 1), _pixels(bits, 2)])
        path = folder / f"{ts}-{vendor}-2frames.dcm"
        out.append(make_file(path, px, vendor, ts, tag=f"fuzz-2f-{ts}"))
    return out


def _pixels(bits: int, k: int) -> np.ndarray:
    """A breast-like gradient with a bright 'clip', in `bits`-bit stored values."""
    top = (1 << bits) - 1
    y, x = np.mgrid[0:ROWS, 0:COLS]
    blob = np.exp(-((x - 4 * k % COLS) ** 2 + (y - 20) ** 2) / 300.0)
    px = (top * 0.2 + top * 0.5 * blob).round()
    px[10:13, 14:17] = top
    return px.astype(np.uint16)


# ---------------------------------------------------------------- where things are


@dataclass
class _Element:
    tag: int
    header: int  # where the element starts
    value: int  # where its value starts
    length: int
    long: bool  # explicit VR with a 4-byte length


def _layout(path: Path) -> tuple[bool, list[_Element], int, int]:
    """(explicit VR, top-level elements, end of file meta, start of pixel value)."""
    data = path.read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])
    meta_end = 144 + group_length
    ds = pydicom.dcmread(path, defer_size=0)
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    explicit = not ts.is_implicit_VR
    elements, pixel = [], meta_end
    if ts.is_deflated:
        return explicit, elements, meta_end, meta_end
    for tag in list(ds.keys()):  # tags (iterating a Dataset gives its elements)
        raw = ds.get_item(tag, keep_deferred=True)
        tell = getattr(raw, "value_tell", None)
        if tell is None:
            continue
        length = getattr(raw, "length", 0)
        long = explicit and data[tell - 8 : tell - 4] != struct.pack("<HH", tag.group, tag.elem)
        elements.append(_Element(int(tag), tell - (12 if long else 8), tell, length, long))
        if tag == 0x7FE00010:
            pixel = tell
    return explicit, elements, meta_end, pixel


# ---------------------------------------------------------------- mutations


def _flip(rng: random.Random, data: bytearray, lo: int, hi: int) -> str:
    hi = max(hi, lo + 1)
    spots = sorted(rng.randrange(lo, min(hi, len(data))) for _ in range(rng.randint(1, 6)))
    for at in spots:
        data[at] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
    return f"{len(spots)} bytes at {spots}"


def flip_header(rng: random.Random, path: Path) -> tuple[bytes, str]:
    data = bytearray(path.read_bytes())
    _explicit, _elements, meta_end, pixel = _layout(path)
    return bytes(data), _flip(rng, data, 128, max(pixel, meta_end + 1))


def flip_pixels(rng: random.Random, path: Path) -> tuple[bytes, str]:
    data = bytearray(path.read_bytes())
    _explicit, _elements, _meta_end, pixel = _layout(path)
    return bytes(data), _flip(rng, data, pixel, len(data))


def truncate(rng: random.Random, path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    cut = rng.randrange(132, len(data))
    return data[:cut], f"cut at {cut} of {len(data)}"


def offset_table(rng: random.Random, path: Path) -> tuple[bytes, str]:
    """Damage the Basic Offset Table or the first fragment's length (encapsulated data);
    for native data, the Pixel Data length."""
    data = bytearray(path.read_bytes())
    _explicit, elements, _meta_end, pixel = _layout(path)
    item = data.find(b"\xfe\xff\x00\xe0", pixel)
    if item < 0 or item > pixel + 16:
        el = next((e for e in elements if e.tag == 0x7FE00010), None)
        if el is None:
            return bytes(data), "no pixel data"
        value = rng.choice([0, 1, 2, el.length // 2, el.length * 4, 0x7FFFFFFF])
        data[el.value - 4 : el.value] = struct.pack("<I", value)
        return bytes(data), f"pixel data length {el.length} -> {value}"
    (bot,) = struct.unpack("<I", data[item + 4 : item + 8])
    how = rng.choice(["bot-length", "bot-entries", "fragment-length"])
    if how == "bot-length":
        value = rng.choice([4, 8, 0xFFFF, 0x7FFFFFFF, len(data)])
        data[item + 4 : item + 8] = struct.pack("<I", value)
    elif how == "bot-entries" and bot >= 4:
        value = rng.choice([0xFFFFFFFF, 7, len(data) * 2])
        data[item + 8 : item + 12] = struct.pack("<I", value)
    else:
        frag = item + 8 + bot
        value = rng.choice([0, 3, 0xFFFFFFF0, 0x7FFFFFFF, 1 << 20])
        data[frag + 4 : frag + 8] = struct.pack("<I", value)
        how = "fragment-length"
    return bytes(data), f"{how} -> {value}"


def swap_ts(rng: random.Random, path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    old = str(meta.TransferSyntaxUID)
    new = rng.choice([u for u in SWAP_UIDS if u != old])
    meta.TransferSyntaxUID = UID(new)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    return data[:132] + buf.getvalue() + data[144 + group_length :], f"{old} -> {new}"


def swap_vr(rng: random.Random, path: Path) -> tuple[bytes, str]:
    data = bytearray(path.read_bytes())
    explicit, elements, _meta_end, _pixel = _layout(path)
    short = [e for e in elements if explicit and not e.long]
    if not short:  # implicit VR or deflated: there are no VRs to swap; flip instead
        return flip_header(rng, path)
    el = rng.choice(short)
    vr = rng.choice(VRS)
    data[el.header + 4 : el.header + 6] = vr
    return bytes(data), f"({el.tag >> 16:04X},{el.tag & 0xFFFF:04X}) VR -> {vr.decode()}"


def absurd_length(rng: random.Random, path: Path) -> tuple[bytes, str]:
    data = bytearray(path.read_bytes())
    explicit, elements, _meta_end, _pixel = _layout(path)
    if not elements:
        return truncate(rng, path)
    el = rng.choice(elements)
    if explicit and not el.long:
        value = rng.choice([0xFFFF, 0xFFFE, 1, 3, (el.length + 7) & 0xFFFF])
        data[el.value - 2 : el.value] = struct.pack("<H", value)
    else:
        value = rng.choice([0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFF, 3, (el.length + 1001) & 0xFFFFFFFF])
        data[el.value - 4 : el.value] = struct.pack("<I", value)
    return bytes(data), f"({el.tag >> 16:04X},{el.tag & 0xFFFF:04X}) length {el.length} -> {value}"


def header_value(rng: random.Random, path: Path) -> tuple[bytes, str]:
    keyword, vr, value = rng.choice(ABSURD)
    tag = pydicom.datadict.tag_for_keyword(keyword)
    ds = pydicom.dcmread(path)
    text = None
    if isinstance(value, str):  # written as bytes: pydicom refuses to make some of them
        text = value.encode() + b" " * (len(value) % 2)
        value = "9" * len(text)  # a placeholder of the same length, replaced below
    ds[tag] = DataElement(tag, vr, value)
    if keyword == "Rows" and value == 65535 and rng.random() < 0.5:
        ds.Columns = 65535
    buf = DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if text is not None and not ds.file_meta.TransferSyntaxUID.is_deflated:
        group, elem = tag >> 16, tag & 0xFFFF
        head = struct.pack("<HH", group, elem)
        at = data.find(head, 132 + 12)
        while at >= 0:
            start = data.find(b"9" * len(text), at, at + 16)
            if start >= 0:
                data = data[:start] + text + data[start + len(text) :]
                break
            at = data.find(head, at + 4)
    shown = text.decode().strip() if text is not None else value
    return data, f"{keyword} = {shown!r}"


MUTATIONS: dict[str, Callable[[random.Random, Path], tuple[bytes, str]]] = {
    "flip-header": flip_header,
    "flip-pixels": flip_pixels,
    "truncate": truncate,
    "offset-table": offset_table,
    "swap-ts": swap_ts,
    "swap-vr": swap_vr,
    "absurd-length": absurd_length,
    "header-value": header_value,
}


def _own_uid(src: Path, dst: Path, i: int) -> None:
    ds = pydicom.dcmread(src)
    uid = UID(f"{ds.SOPInstanceUID}.{i + 1}")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(dst, enforce_file_format=True)


def make_corpus(folder: Path, n: int = 300, seed: int = 18) -> tuple[list[Path], list[Mutant]]:
    """Seeds in ``folder/good``, `n` mutants in ``folder/mutants`` and the known hostile
    files in ``folder/known``; deterministic."""
    seeds = seed_files(folder / "good")
    known_files(folder / "known")
    out = folder / "mutants"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ops = list(MUTATIONS)
    mutants = []
    for i in range(n):
        src = seeds[i % len(seeds)]
        op = ops[(i // len(seeds)) % len(ops)] if i < len(seeds) * len(ops) else rng.choice(ops)
        path = out / f"{i:04d}-{op}-{src.stem}.dcm"
        _own_uid(src, path, i)  # else a mutant is its seed's duplicate, never decoded
        data, detail = MUTATIONS[op](rng, path)
        path.write_bytes(data)
        mutants.append(Mutant(path, src.name, op, detail))
    return seeds, mutants


# ---------------------------------------------------------------- known hostile files
# Each reproduces a defect found by fuzzing (issue 18), deterministically.

HOSTILE_PX = ((np.arange(40 * 32, dtype=np.uint16).reshape(40, 32) * 37) % 4096).astype(np.uint16)


def good(path: Path, ts: str = "explicit", vendor: str = "ge") -> Path:
    return make_file(path, HOSTILE_PX, vendor, ts, tag=path.name)


def set_raw(path: Path, keyword: str, vr: str, value: str | int) -> Path:
    """Write `value` as given, whatever pydicom thinks of it (a string goes in as bytes)."""
    ds = pydicom.dcmread(path)
    tag = pydicom.datadict.tag_for_keyword(keyword)
    if isinstance(value, str):
        raw = value.encode() + b" " * (len(value) % 2)
        ds[tag] = DataElement(tag, vr, "9" * len(raw))
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
        at = data.index(head, 132 + 12) + 8
        path.write_bytes(data[:at] + raw + data[at + len(raw) :])
    else:
        ds[tag] = DataElement(tag, vr, value)
        ds.save_as(path, enforce_file_format=True)
    return path


def rle_panic(path: Path) -> Path:
    """An RLE frame whose segments decode to twice the frame: pylibjpeg-rle panics
    (``pyo3_runtime.PanicException: index out of bounds``), a BaseException."""
    ds = pydicom.dcmread(good(path, "rle", "hologic"))
    seg = bytes([129, 7]) * 20  # 20 runs of 128 copies: 2560 bytes for a 1280-byte segment
    header = struct.pack("<16I", 2, 64, 64 + len(seg), *([0] * 13))
    ds.PixelData = encapsulate([header + seg + seg])
    ds.save_as(path, enforce_file_format=True)
    return path


def gdcm_abort(path: Path) -> Path:
    """12-bit JPEG Extended whose BitsStored is written with VR SS: GDCM throws a C++
    exception through its C API and the process aborts (SIGABRT)."""
    good(path, "jpeg-lossy")
    data = bytearray(path.read_bytes())
    at = data.index(b"\x28\x00\x01\x01US")
    data[at + 4 : at + 6] = b"SS"
    path.write_bytes(bytes(data))
    return path


def implicit_claiming_explicit(path: Path) -> Path:
    """An implicit VR dataset whose file meta says explicit VR: pydicom logs a warning
    (to its logger, with a traceback-free message) and reads it as implicit."""
    ds = pydicom.dcmread(good(path))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])
    meta = ds.file_meta
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    path.write_bytes(data[:132] + buf.getvalue() + data[144 + group_length :])
    return path


SAID = "Expected explicit VR, but found implicit VR - using implicit VR for reading"


def j2k_header_smashed(path: Path) -> Path:
    """A JPEG 2000 codestream whose main header (SIZ) is garbage: pydicom logs a
    traceback and the codec says "failed to read the header"."""
    good(path, "j2k")
    data = bytearray(path.read_bytes())
    at = data.index(b"\xff\x4f\xff\x51")  # SOC + SIZ
    data[at + 4 : at + 40] = bytes(range(200, 236))
    path.write_bytes(bytes(data))
    return path


def huge_claim(path: Path) -> Path:
    """A small RLE file declaring 65535 x 65535 pixels (8 GiB)."""
    ds = pydicom.dcmread(good(path, "rle"))
    ds.Rows = ds.Columns = 65535
    ds.save_as(path, enforce_file_format=True)
    return path


#: name -> maker of the known hostile files (``known/`` in a corpus).
KNOWN: dict[str, Callable[[Path], Path]] = {
    "rle-panic": rle_panic,
    "gdcm-abort": gdcm_abort,
    "j2k-header-smashed": j2k_header_smashed,
    "huge-claim": huge_claim,
    "implicit-claiming-explicit": implicit_claiming_explicit,
    "frames-99999999": lambda p: set_raw(good(p, "j2k"), "NumberOfFrames", "IS", "99999999"),
    "frames-1e9": lambda p: set_raw(good(p, "rle"), "NumberOfFrames", "IS", "1e9"),
    "intercept-nan": lambda p: set_raw(good(p), "RescaleIntercept", "DS", "nan"),
    "intercept-1e308": lambda p: set_raw(good(p), "RescaleIntercept", "DS", "1e308"),
    "slope-0": lambda p: set_raw(good(p), "RescaleSlope", "DS", "0"),
    "pixel-representation-2": lambda p: set_raw(good(p), "PixelRepresentation", "US", 2),
}


def known_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [make(folder / f"{name}.dcm") for name, make in KNOWN.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=18)
    args = p.parse_args()
    seeds, mutants = make_corpus(args.folder, args.n, args.seed)
    print(f"{len(seeds)} seeds, {len(mutants)} mutants in {args.folder}")


if __name__ == "__main__":
    main()
