"""What a synthetic image is known to show: the ground truth (`SynthImage`, its CSV) and
the attenuation scale every part of the generator draws on."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Small clips left at a biopsy site.
CLIP_KINDS: tuple[str, ...] = ("ribbon", "coil", "cylinder", "x", "ring")
#: Everything `add_marker` can burn in (all count as a biopsy marker/tool).
BIOPSY_KINDS: tuple[str, ...] = (*CLIP_KINDS, "wire", "needle")
#: Words that make a description claim a marker/procedure (see `SynthImage.header_marker_hint`).
MARKER_HINT_WORDS: tuple[str, ...] = ("CLIP", "POST BX", "NEEDLE LOC", "STEREO BX", "WIRE LOC")

METAL = 1.0  #: attenuation value of metal (markers, wires, needles, skin BBs)
SATURATION = 0.97  #: values at or above this reach the extreme end of the stored range
TISSUE_MAX = 0.85  #: anatomy never exceeds this
CALC_MAX = 0.93  #: calcifications never exceed this (they must not look like metal)
#: Metal below the extreme (`Realism.metal_level`) stays this far (stored fraction) above
#: the tissue under it: it always out-attenuates its surroundings.
METAL_MARGIN = 0.05

GROUND_TRUTH_COLUMNS: tuple[str, ...] = (
    "path",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "patient_id",
    "has_biopsy_tool",
    "has_mag_view",
    "vendor",
    "transfer_syntax",
    "view",
    "laterality",
    "marker_kind",
    "header_mag_hint",
    "header_marker_hint",
    "marker_boxes",
)
_BOOL_COLUMNS = frozenset(
    {"has_biopsy_tool", "has_mag_view", "header_mag_hint", "header_marker_hint"}
)


@dataclass
class SynthImage:
    """Ground truth for one generated image.

    `marker_kind` lists every object burned in, joined by "+": biopsy kinds first
    (see `BIOPSY_KINDS`), then confounders ("skin_bb", "calcs"); "" when none.
    `has_biopsy_tool` is the label; a "skin_bb" alone is not a biopsy tool.
    `header_mag_hint` is true when the header claims magnification (mag or spot view
    modifier, magnification factor >= 1.3, the vendor's mag paddle, or "MAG"/"SPOT" in the
    series description); `header_marker_hint` when a description contains one of
    `MARKER_HINT_WORDS`.
    `marker_boxes` says where each biopsy marker/tool lies, in the order of its kind in
    `marker_kind`: the bounding box of the pixels it changed, "row0 col0 row1 col1"
    (half-open, pixels of the stored matrix), boxes joined by ";"; "" when none.
    """

    path: Path
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    has_biopsy_tool: bool
    has_mag_view: bool
    vendor: str
    transfer_syntax: str
    view: str
    laterality: str
    marker_kind: str
    header_mag_hint: bool
    header_marker_hint: bool
    marker_boxes: str = ""


def write_ground_truth(images: Iterable[SynthImage], path: Path) -> Path:
    """Write `GROUND_TRUTH_COLUMNS` as CSV (paths relative to the CSV's folder, bools 0/1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(GROUND_TRUTH_COLUMNS)
        for im in images:
            row = []
            for col in GROUND_TRUTH_COLUMNS:
                val = getattr(im, col)
                if col == "path":
                    p = Path(val)
                    try:
                        val = p.resolve().relative_to(root).as_posix()
                    except ValueError:
                        val = p.as_posix()
                elif col in _BOOL_COLUMNS:
                    val = int(bool(val))
                row.append(val)
            w.writerow(row)
    return path


def read_ground_truth(path: Path) -> list[SynthImage]:
    """Read a ground_truth.csv back (paths made absolute against the CSV's folder)."""
    path = Path(path)
    out = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            kw: dict[str, object] = dict(row)
            kw["path"] = path.parent / row["path"]
            for col in _BOOL_COLUMNS:
                kw[col] = row[col] == "1"
            out.append(SynthImage(**kw))  # type: ignore[arg-type]
    return out


def truth_labels(images: Sequence[SynthImage], annotator: str = "truth") -> list:
    """Label events that say what the ground truth says (demo, benchmarks, tests): a
    perfect labeler, imported."""
    from ..store.labels import LabelEvent

    return [
        LabelEvent(
            i.sop_instance_uid,
            "label",
            annotator,
            "import",
            has_biopsy_tool=i.has_biopsy_tool,
            has_mag_view=i.has_mag_view,
        )
        for i in images
    ]
