"""Realism options for synthetic archives: the ways another hospital's archive differs.

The base generator (`synthetic.generate_archive` with ``Realism()``) is one hospital:
metal lands exactly on the bright extreme of the stored range, every mag view shows its
paddle band, files are lossless. Each option here moves one of those facts the way real
For Presentation archives do, so that a model trained on the base archive can be scored
on archives it has never seen (`benchmarks/bench_robustness.py`). `SHIFTS` names the
shifts the benchmark scores; ``mammo synth --shift NAME`` writes one.

Options are drawn from random streams of their own: an archive with a shift holds the
same patients, studies, anatomy and markers as the base archive of its seed, changed
only in what the shift says (a paired comparison).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

#: Bright objects that can be put in every image (`Realism.distractors`).
DISTRACTORS: tuple[str, ...] = ("calcs", "bbs", "letters", "implants")


@dataclass(frozen=True)
class Realism:
    """How a synthetic archive departs from the base generator (all off by default).

    - `metal_level`: each metal object's plateau as a fraction (lo, hi) of the way to the
      bright extreme of the stored range, drawn per object; never darker than the tissue
      under it plus `METAL_MARGIN` (metal always out-attenuates its surroundings). Lead
      letters use `letter_level`.
    - `distractors`: objects put in every image: "calcs" (a calcification cluster),
      "bbs" (a skin BB), "letters" (lead laterality/view letters in the air beside the
      breast), "implants" (a dense implant whose edge crosses the image).
    - `paddle_band`: False draws mag views without the bright compression-paddle band.
    - `matrix_scale`: the detector matrix rescaled (same field of view, other pixel size).
    - `declared_bits`: BitsStored written in the header (e.g. 16 for 12-bit data); the
      pixel values and windows stay those of the vendor's real depth.
    - `j2k_ratio`, `jpeg_quality`: the lossy syntaxes' settings (see
      `dicom_write.TRANSFER_SYNTAXES`: "j2k-lossy", "jpeg-lossy" 12-bit, "jpeg8" 8-bit).

    Vendors (including `ims`, a profile outside the default mix) are chosen with
    ``generate_archive(vendors=...)``, transfer syntaxes with ``transfer_syntaxes=``.
    """

    metal_level: tuple[float, float] = (1.0, 1.0)
    letter_level: tuple[float, float] = (1.0, 1.0)
    distractors: tuple[str, ...] = ()
    paddle_band: bool = True
    matrix_scale: float = 1.0
    declared_bits: int | None = None
    j2k_ratio: float = 15.0
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        for name in ("metal_level", "letter_level"):
            lo, hi = getattr(self, name)
            if not 0.5 <= lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0.5 <= lo <= hi <= 1, got {lo}-{hi}")
        unknown = [d for d in self.distractors if d not in DISTRACTORS]
        if unknown:
            raise ValueError(f"unknown distractors {unknown}; use {list(DISTRACTORS)}")
        if not 0.25 <= self.matrix_scale <= 2.0:
            raise ValueError(f"matrix_scale must be within 0.25..2, got {self.matrix_scale}")
        if self.declared_bits is not None and not 8 <= self.declared_bits <= 16:
            raise ValueError(f"declared_bits must be 8..16, got {self.declared_bits}")
        if not 2.0 <= self.j2k_ratio <= 200.0:
            raise ValueError(f"j2k_ratio must be within 2..200, got {self.j2k_ratio}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, got {self.jpeg_quality}")

    @property
    def shifts_metal(self) -> bool:
        return self.metal_level != (1.0, 1.0) or (
            "letters" in self.distractors and self.letter_level != (1.0, 1.0)
        )

    def describe(self) -> str:
        """One line naming what differs from the base archive ("base" when nothing)."""
        base = Realism()
        parts = []
        if self.metal_level != base.metal_level:
            parts.append(f"metal at {self.metal_level[0]:.2f}-{self.metal_level[1]:.2f}")
        if self.distractors:
            parts.append("+".join(self.distractors) + " in every image")
            if "letters" in self.distractors and self.letter_level != base.letter_level:
                lo, hi = self.letter_level
                parts.append(f"letters at {lo:.2f}-{hi:.2f}")
        if not self.paddle_band:
            parts.append("no paddle band")
        if self.matrix_scale != 1.0:
            parts.append(f"matrix x{self.matrix_scale:g}")
        if self.declared_bits:
            parts.append(f"BitsStored {self.declared_bits} declared")
        return ", ".join(parts) or "base"


@dataclass(frozen=True)
class Shift:
    """A named archive variant: realism options, and optionally its own syntaxes/vendors."""

    name: str
    realism: Realism = field(default_factory=Realism)
    transfer_syntaxes: tuple[str, ...] = ()  # () = each vendor's own
    vendors: tuple[str, ...] = ()  # () = the default vendors
    about: str = ""


_LOW_METAL = Realism(metal_level=(0.85, 0.95))
_ISSUE_METAL = Realism(metal_level=(0.93, 0.99), distractors=("letters", "calcs"))

#: The shifts `bench_robustness.py` scores (none of them is used in training).
SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("base", about="the base generator (another seed than training)"),
        Shift("metal-low", _LOW_METAL, about="metal at 85-95% of the stored maximum"),
        Shift(
            "metal-letters",
            _ISSUE_METAL,
            about="metal at 93-99%, lead letters at the maximum and calcifications in every image",
        ),
        Shift(
            "j2k-lossy",
            replace(_ISSUE_METAL, j2k_ratio=15.0),
            ("j2k-lossy",),
            about="the same, every file lossy JPEG 2000 at 15:1",
        ),
        Shift(
            "jpeg-lossy",
            replace(_LOW_METAL, jpeg_quality=85),
            ("jpeg-lossy", "jpeg8"),
            about="metal at 85-95%, lossy JPEG: 12-bit extended and 8-bit baseline (q 85)",
        ),
        Shift("bits16", Realism(declared_bits=16), about="12/14-bit data declared as 16-bit"),
        Shift(
            "distractors",
            Realism(distractors=DISTRACTORS),
            about="calcifications, a skin BB, lead letters and an implant in every image",
        ),
        Shift("skin-bbs", Realism(distractors=("bbs",)), about="a skin BB in every image"),
        Shift("implants", Realism(distractors=("implants",)), about="an implant in every image"),
        Shift("no-band", Realism(paddle_band=False), about="mag views without a paddle band"),
        Shift("rescaled", Realism(matrix_scale=0.7), about="matrices rescaled to 70%"),
        Shift("vendor-ims", vendors=("ims",), about="a vendor profile never trained on"),
    )
}


def parse_range(text: str) -> tuple[float, float]:
    """ "0.85-0.95" or "0.9" -> (lo, hi)."""
    parts = text.split("-")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected LO-HI or a number, got {text!r}") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ValueError(f"expected LO-HI or a number, got {text!r}")
    return values[0], values[1]
