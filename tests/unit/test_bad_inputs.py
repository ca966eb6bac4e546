"""A corpus of broken files: each gives its typed error with a one-line reason, never a crash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from mammo_dagster.core.imaging.batch import thumbnail_folder
from mammo_dagster.core.imaging.dicom import DicomError, Failure, open_dicom
from mammo_dagster.core.imaging.thumbnails import render
from tests.factory import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, make_file

PIXELS = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 7) % 4096


def good(path: Path, ts: str = "explicit", **kw) -> Path:
    return make_file(path, PIXELS, "ge", ts, bits_stored=12, **kw)


def edit(path: Path, change: Callable[[Dataset], None]) -> Path:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=False)
    return path


def _corrupt_codestream(path: Path) -> Path:
    """Smash the main header of the first frame's codestream, in place in the file."""
    data = bytearray(path.read_bytes())
    frame = next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1))
    start = data.find(frame[:64])
    data[start : start + 40] = bytes(range(200, 240))
    path.write_bytes(bytes(data))
    return path


def _unsupported_syntax(path: Path) -> Path:
    ds = pydicom.dcmread(good(path))
    ds.PixelData = encapsulate([bytes(ds.PixelData)])
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 Main Profile
    ds.save_as(path, enforce_file_format=True)
    return path


def _bare_dataset(path: Path) -> Path:
    ds = pydicom.dcmread(good(path))
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    pydicom.filewriter.write_dataset(buf, ds)  # implicit VR LE, no preamble, no meta
    path.write_bytes(buf.getvalue())
    return path


def _patch_rows(path: Path) -> Path:
    """Rows (US, VM 1) written with a 3-byte value: explicit VR lets a file say anything."""
    data = bytearray(path.read_bytes())
    tag = b"\x28\x00\x10\x00US\x02\x00"
    i = data.find(tag)
    data[i : i + len(tag) + 2] = b"\x28\x00\x10\x00US\x03\x00" + data[i + 8 : i + 10] + b"\x00"
    path.write_bytes(bytes(data))
    return path


def _dicomdir(path: Path) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.1.3.10")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    ds.FileSetID = "ARCHIVE"
    ds.DirectoryRecordSequence = []
    ds.save_as(path, enforce_file_format=True)
    return path


def _color(path: Path) -> Path:
    def change(ds: Dataset) -> None:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0

    return edit(good(path), change)


CORPUS: dict[str, tuple[Callable[[Path], Path], Failure]] = {
    "empty file": (lambda p: (p.write_bytes(b""), p)[1], Failure.EMPTY_FILE),
    "random bytes": (
        lambda p: (p.write_bytes(np.random.default_rng(0).bytes(5000)), p)[1],
        Failure.NOT_DICOM,
    ),
    "text file": (
        lambda p: (p.write_text("Patient list\nnothing here\n"), p)[1],
        Failure.NOT_DICOM,
    ),
    "truncated in pixel data": (
        lambda p: (p.write_bytes(good(p).read_bytes()[:-1000]), p)[1],
        Failure.TRUNCATED,
    ),
    "truncated in header": (
        lambda p: (p.write_bytes(good(p).read_bytes()[:700]), p)[1],
        Failure.TRUNCATED,
    ),
    "truncated compressed": (
        lambda p: (p.write_bytes(good(p, "j2k").read_bytes()[:-300]), p)[1],
        Failure.TRUNCATED,
    ),
    "no pixel data": (
        lambda p: edit(good(p), lambda ds: delattr(ds, "PixelData")),
        Failure.NO_PIXEL_DATA,
    ),
    "unsupported transfer syntax": (_unsupported_syntax, Failure.UNSUPPORTED_TRANSFER_SYNTAX),
    "wrong modality": (
        lambda p: edit(
            good(p),
            lambda ds: (
                setattr(ds, "Modality", "CT"),
                setattr(ds, "SOPClassUID", UID("1.2.840.10008.5.1.4.1.1.2")),
            ),
        ),
        Failure.UNSUPPORTED_SOP_CLASS,
    ),
    "zero-size image": (
        lambda p: edit(good(p), lambda ds: setattr(ds, "Rows", 0)),
        Failure.ZERO_SIZE_IMAGE,
    ),
    "colour image": (_color, Failure.UNSUPPORTED_PIXEL_FORMAT),
    "corrupt J2K stream": (lambda p: _corrupt_codestream(good(p, "j2k")), Failure.DECODE_ERROR),
    "corrupt JPEG-LS stream": (
        lambda p: _corrupt_codestream(good(p, "jpegls")),
        Failure.DECODE_ERROR,
    ),
    "corrupt RLE stream": (lambda p: _corrupt_codestream(good(p, "rle")), Failure.DECODE_ERROR),
    "DICOMDIR": (_dicomdir, Failure.DICOMDIR),
    "frames not a number": (
        lambda p: edit(good(p), lambda ds: ds.add_new(0x00280008, "LO", "abc")),
        Failure.INVALID_HEADER,
    ),
    "zero frames": (
        lambda p: edit(good(p), lambda ds: setattr(ds, "NumberOfFrames", 0)),
        Failure.ZERO_SIZE_IMAGE,
    ),
    "odd-length Rows": (lambda p: _patch_rows(good(p)), Failure.INVALID_HEADER),
    "invalid SOP UID": (
        lambda p: edit(good(p), lambda ds: setattr(ds, "SOPInstanceUID", "1.2.abc/../x")),
        Failure.INVALID_HEADER,
    ),
    "tomosynthesis": (
        lambda p: edit(
            good(p), lambda ds: setattr(ds, "SOPClassUID", UID("1.2.840.10008.5.1.4.1.1.13.1.3"))
        ),
        Failure.UNSUPPORTED_SOP_CLASS,
    ),
    "missing file": (lambda p: p / "nope", Failure.UNREADABLE),
}


@pytest.mark.parametrize("case", list(CORPUS))
@pytest.mark.parametrize("exact", [False, True])
def test_bad_input_gives_typed_error(tmp_path: Path, case: str, exact: bool) -> None:
    make, kind = CORPUS[case]
    path = make(tmp_path / "bad.dcm")
    with pytest.raises(DicomError) as err:
        render(path, size=32, exact=exact)
    assert err.value.kind == kind, err.value
    assert "\n" not in str(err.value) and err.value.reason
    assert FAKE_PATIENT_ID not in str(err.value) and "DOE" not in str(err.value)


def test_frame_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(DicomError) as err:
        render(good(tmp_path / "a.dcm"), frame=3, size=32)
    assert err.value.kind == Failure.FRAME_OUT_OF_RANGE


def test_unparseable_rescale_falls_back_to_identity(tmp_path: Path) -> None:
    """Values a careless writer leaves behind degrade gracefully instead of failing: a
    Rescale Slope of "1,5" is read as no rescale (the file's own slope is 1)."""
    path = edit(good(tmp_path / "x.dcm"), lambda ds: ds.add_new(0x00281053, "LO", "1,5"))
    for exact in (False, True):
        np.testing.assert_array_equal(
            render(path, size=32, exact=exact).image,
            render(good(tmp_path / "g.dcm"), size=32, exact=exact).image,
        )


def test_padding_value_written_as_bytes_is_read_as_a_stored_value(tmp_path: Path) -> None:
    """A Pixel Padding Value written as OB (one byte, padded to 0x0000 on write) is read as
    the stored value 0: that pixel is kept black, every other one renders as without it."""
    path = edit(good(tmp_path / "x.dcm"), lambda ds: ds.add_new(0x00280120, "OB", b"\x00"))
    zero = PIXELS == 0
    assert zero.sum() == 1
    for exact in (False, True):
        got = render(path, size=64, pad=False, exact=exact).image
        want = render(good(tmp_path / "g.dcm"), size=64, pad=False, exact=exact).image
        assert got.shape == want.shape == PIXELS.shape
        np.testing.assert_array_equal(got[~zero], want[~zero])
        assert got[zero].max() == 0 < want[zero].max()


def test_unparseable_window_falls_back_to_the_automatic_one(tmp_path: Path) -> None:
    """A Window Width of "abc" is no window: the automatic (percentile) one is used."""
    path = edit(good(tmp_path / "x.dcm"), lambda ds: ds.add_new(0x00281051, "LO", "abc"))
    for exact in (False, True):
        thumb = render(path, size=32, exact=exact)
        assert thumb.voi.kind == "auto", thumb.voi.describe()
        assert thumb.image.max() > thumb.image.min()


def test_voi_lut_without_data_falls_back_to_window(tmp_path: Path) -> None:
    def change(ds: Dataset) -> None:
        item = Dataset()
        item.LUTDescriptor = [4096, 0, 12]
        ds.VOILUTSequence = [item]

    path = edit(good(tmp_path / "x.dcm", voi="window"), change)
    thumb = render(path, size=32)
    assert thumb.voi.kind == "window"


def test_deflated_transfer_syntax_renders(tmp_path: Path) -> None:
    path = good(tmp_path / "x.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "d.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(
        render(tmp_path / "d.dcm", size=64).image, render(path, size=64).image
    )


def test_bare_dataset_without_preamble_is_read_with_a_warning(tmp_path: Path) -> None:
    """Old archives hold datasets without the 128-byte preamble and file meta.

    They are readable (and lose nothing) so they are read, with the typed warning
    recorded in the header facts rather than an error.
    """
    path = _bare_dataset(tmp_path / "bare")
    assert path.read_bytes()[128:132] != b"DICM"
    dicom = open_dicom(path)
    assert any("no DICOM preamble" in w for w in dicom.facts.warnings)
    np.testing.assert_array_equal(
        render(path, size=64, pad=False).image,
        render(good(tmp_path / "g.dcm"), size=64, pad=False).image,
    )


def test_whole_corpus_in_one_batch_is_rows_not_a_crash(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    for i, (make, _kind) in enumerate(CORPUS.values()):
        sub = folder / f"case{i:02d}"
        sub.mkdir(parents=True)
        make(sub / "IM0001")
    good(folder / "ok" / "IM0001")
    rows = thumbnail_folder(folder, tmp_path / "thumbs", size=32, workers=1)
    kinds = sorted(r.error_kind for r in rows if r.status == "error")
    expected = sorted(
        k.value for k in (kind for _m, kind in CORPUS.values()) if k != Failure.UNREADABLE
    )  # the missing file isn't in the folder
    assert kinds == expected
    assert [r.status for r in rows].count("ok") == 1
    assert all(FAKE_PATIENT_ID not in str(r) and FAKE_PATIENT_NAME not in str(r) for r in rows)


@pytest.mark.parametrize("ts", ["explicit", "jpegls", "j2k", "rle"])
@pytest.mark.parametrize("keep", [0.08, 0.1, 0.15, 0.3, 0.6, 0.95])
def test_cut_anywhere_is_truncated(tmp_path: Path, ts: str, keep: float) -> None:
    """A file cut inside its pixel data is `truncated`; cut earlier, it is `truncated` or,
    when the cut falls exactly between two elements (indistinguishable from a file that
    has no pixel data), `no_pixel_data` with a reason that says it may be cut short."""
    full = good(tmp_path / "g.dcm", ts).read_bytes()
    n = max(300, int(len(full) * keep))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full[:n])
    with pytest.raises(DicomError) as err:
        render(cut, size=32)
    if n > full.find(b"\xe0\x7f\x10\x00"):
        assert err.value.kind == Failure.TRUNCATED, err.value
    elif err.value.kind == Failure.NO_PIXEL_DATA:
        assert "cut short" in err.value.reason
    else:
        assert err.value.kind == Failure.TRUNCATED, err.value
