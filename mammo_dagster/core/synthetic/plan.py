"""The archive plan: fake patients, their studies and images, and the headers that only
sometimes say what the pixels show (and sometimes lie)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from mammo_dagster.core.imaging.vendors import DEFAULT_VENDORS, VENDOR_PROFILES, VendorProfile
from mammo_dagster.core.synthetic.mixes import StudyMix, study_mix

from .truth import CLIP_KINDS, MARKER_HINT_WORDS

# ---------------------------------------------------------------------------------------------
# archive plan

#: Fake names for fake patients.
_SURNAMES = (
    "DOE",
    "SMITH",
    "JOHNSON",
    "GARCIA",
    "MILLER",
    "MARTIN",
    "MULLER",
    "SCHMIDT",
    "ROSSI",
    "DUBOIS",
    "NOVAK",
    "KOWALSKA",
    "TANAKA",
    "OKAFOR",
    "SILVA",
    "NGUYEN",
    "HANSEN",
    "JANSEN",
    "MORENO",
    "PETROVA",
    "LINDQVIST",
    "OBRIEN",
    "KELLY",
    "FISCHER",
    "WEBER",
    "BAKER",
    "HUGHES",
    "PATEL",
    "CHEN",
    "LEE",
)
_GIVEN = (
    "JANE",
    "MARY",
    "ANNA",
    "MARIA",
    "LINDA",
    "SUSAN",
    "KAREN",
    "EVA",
    "SOFIA",
    "ELENA",
    "GRACE",
    "HELEN",
    "ALICE",
    "CLARA",
    "NORA",
    "IRENE",
    "ROSA",
    "LUCIA",
    "PAULA",
    "RUTH",
    "AMINA",
    "YUKI",
    "MEI",
    "INGRID",
    "HANNA",
    "JULIA",
    "MARTA",
    "OLGA",
)


StudyKind = Literal["screening", "diagnostic", "followup", "followup_diag", "stereo", "needle_loc"]


@dataclass
class _ImagePlan:
    view: str
    laterality: str
    mag: bool
    mag_factor: float
    markers: tuple[str, ...]
    skin_bb: bool
    calcs: bool
    extra: bool  # additional (non-standard) view
    mag_modifier: bool = False
    spot_modifier: bool = False
    header_mag_factor: float | None = None
    paddle: str | None = None
    series_description: str | None = None


@dataclass
class _StudyPlan:
    kind: StudyKind
    patient_index: int
    patient_id: str
    patient_name: str
    vendor: str
    study_date: str
    accession: str
    density: float
    side: str  # the breast the study is about
    clips: dict[str, str]  # side -> clip kind present at the time of the study
    new_clip: str | None  # clip placed during this study (stereotactic biopsy)
    nipple_bbs: bool
    study_description: str = ""
    images: list[_ImagePlan] = field(default_factory=list)


def _side_word(side: str) -> str:
    return {"L": "LEFT", "R": "RIGHT"}[side]


def _plan_patient(
    seed: int,
    p_idx: int,
    vendors: Sequence[str],
    home: str,
    used_ids: set[str],
    mix: StudyMix,
) -> list[_StudyPlan]:
    """The studies of one patient over time: kinds, dates, vendors, clips (kept once placed)."""
    rng = np.random.default_rng([seed, 1, p_idx])
    while True:
        pid = f"PID{int(rng.integers(1_000_000, 10_000_000)):07d}"
        if pid not in used_ids:
            used_ids.add(pid)
            break
    name = f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN)}"
    if rng.random() < 0.3:
        name += f"^{chr(65 + int(rng.integers(26)))}"
    density = float(rng.beta(2.0, 2.5))
    n_studies = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    date = _dt.date(2014, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 3300)))
    clips: dict[str, str] = {}
    if rng.random() < mix.prior_clip:  # arrives with a clip from a biopsy elsewhere
        clips[str(rng.choice(["L", "R"]))] = str(rng.choice(CLIP_KINDS))
    nipple_bbs = bool(rng.random() < 0.15)  # a site habit
    studies = []
    for _ in range(n_studies):
        table = mix.after_biopsy if clips else mix.no_biopsy
        kind = str(rng.choice(list(table), p=list(table.values())))
        if clips and rng.random() < 0.9:
            side = str(rng.choice(sorted(clips)))
        else:
            side = str(rng.choice(["L", "R"]))
        new_clip = (clips.get(side) or str(rng.choice(CLIP_KINDS))) if kind == "stereo" else None
        vendor = home if rng.random() < 0.85 or len(vendors) == 1 else str(rng.choice(vendors))
        studies.append(
            _StudyPlan(
                kind=kind,  # type: ignore[arg-type]
                patient_index=p_idx,
                patient_id=pid,
                patient_name=name,
                vendor=vendor,
                study_date=date.strftime("%Y%m%d"),
                accession=f"A{int(rng.integers(10_000_000, 100_000_000))}",
                density=density,
                side=side,
                clips=dict(clips),
                new_clip=new_clip,
                nipple_bbs=nipple_bbs,
            )
        )
        if new_clip:
            clips[side] = new_clip
        if kind == "needle_loc":
            clips.pop(side, None)  # the lesion and its clip are excised
            if rng.random() < 0.3:
                clips[side] = str(rng.choice(CLIP_KINDS))  # post-surgical clip
        date += _dt.timedelta(days=int(rng.integers(20, 500)))
    return studies


def _plan_study_images(rng: np.random.Generator, study: _StudyPlan) -> None:
    """Fill `study.images` and `study.study_description` (4-8 images)."""
    kind, side, clips = study.kind, study.side, study.clips
    views: list[tuple[str, str, bool, bool]] = []  # laterality, view, mag, extra
    if kind in ("stereo", "needle_loc"):
        views = [(side, ("CC", "MLO")[i % 2], False, i >= 2) for i in range(rng.integers(4, 7))]
    else:
        views = [
            ("R", "CC", False, False),
            ("L", "CC", False, False),
            ("R", "MLO", False, False),
            ("L", "MLO", False, False),
        ]
        if kind in ("screening", "followup") and rng.random() < 0.2:
            for _ in range(int(rng.integers(1, 3))):
                lat, view = str(rng.choice(["L", "R"])), str(rng.choice(["CC", "MLO"]))
                views.append((lat, view, False, True))
        if kind in ("diagnostic", "followup_diag"):
            p_mag = [0.2, 0.35, 0.3, 0.15] if kind == "diagnostic" else [0.1, 0.3, 0.35, 0.25]
            n_mag = int(rng.choice([1, 2, 3, 4], p=p_mag))
            mag_side = side
            if kind == "followup_diag" and rng.random() < 0.15:
                mag_side = "L" if side == "R" else "R"
            for i in range(n_mag):
                views.append((mag_side, ("CC", "MLO")[i % 2], True, True))

    site_bare = rng.random() < 0.3  # this site writes almost no hints
    sw = _side_word(side)
    descriptions = {
        "screening": ["MAMMO SCREENING BILATERAL", "MG SCREEN BILAT W CAD", "SCREENING MAMMOGRAM"],
        "diagnostic": [f"MAMMO DIAGNOSTIC {sw}", "MG DIAG BILAT", f"MAMMO DIAG {sw} W MAG"],
        "followup": ["MAMMO SCREENING BILATERAL", "MAMMO DIAGNOSTIC BILATERAL", "MG FOLLOW UP"],
        "followup_diag": [f"MAMMO DIAGNOSTIC {sw}", "MG DIAG BILAT"],
        "stereo": [f"MG BREAST BIOPSY {sw}", f"MAMMO PROCEDURE {sw}"],
        "needle_loc": [f"MG LOCALIZATION {sw}", f"MAMMO PROCEDURE {sw}"],
    }
    desc = str(rng.choice(descriptions[kind]))
    hint_desc = {
        "followup": (0.08, "MAMMO POST BX FOLLOW UP"),
        "followup_diag": (0.1, f"MG DIAG POST BX {sw}"),
        "stereo": (0.55, f"STEREO BX {sw}"),
        "needle_loc": (0.6, f"MG NEEDLE LOC {sw}"),
    }
    if kind in hint_desc and not site_bare and rng.random() < hint_desc[kind][0]:
        desc = hint_desc[kind][1]
    study.study_description = desc

    profile = VENDOR_PROFILES[study.vendor]
    for i, (lat, view, mag, extra) in enumerate(views):
        markers: list[str] = []
        if kind == "stereo":  # needle in the breast, then the clip it left
            markers = ["needle"] if i < len(views) - 2 else [study.new_clip or "ribbon"]
            if i < len(views) - 2 and clips.get(lat) and rng.random() < 0.5:
                markers.append(clips[lat])
        elif kind == "needle_loc":
            markers = ["wire"] + ([clips[lat]] if clips.get(lat) else [])
        elif lat in clips and (not mag or rng.random() < 0.9):
            markers = [clips[lat]]
        m = float(rng.uniform(1.5, 1.9)) if mag else 1.0
        calcs = bool((mag and rng.random() < 0.6) or (not mag and rng.random() < 0.12))
        skin_bb = bool(not mag and (study.nipple_bbs or rng.random() < 0.06))
        img = _ImagePlan(
            view=view,
            laterality=lat,
            mag=mag,
            mag_factor=m,
            markers=tuple(markers),
            skin_bb=skin_bb,
            calcs=calcs,
            extra=extra,
        )
        _plan_header(rng, img, profile, site_bare, kind)
        study.images.append(img)


def _plan_header(
    rng: np.random.Generator, img: _ImagePlan, profile: VendorProfile, bare: bool, kind: str
) -> None:
    """Header hints: present only sometimes, and sometimes wrong."""
    lat_view = f"{img.laterality} {img.view}"
    if bare:
        return
    if img.mag:
        img.mag_modifier = rng.random() < 0.85
        img.spot_modifier = rng.random() < 0.4
        if rng.random() < 0.7:
            img.header_mag_factor = float(np.clip(round(img.mag_factor, 1), 1.5, 1.8))
        if profile.mag_paddle and rng.random() < 0.7:
            img.paddle = profile.mag_paddle
        if rng.random() < 0.55:
            img.series_description = (
                f"{lat_view} {rng.choice(['MAG', 'SPOT MAG', 'MAGNIFICATION'])}"
            )
        elif rng.random() < 0.5:
            img.series_description = lat_view
    else:
        if rng.random() < 0.7:
            img.header_mag_factor = float(rng.uniform(1.05, 1.12))
        if profile.contact_paddle and rng.random() < 0.7:
            img.paddle = profile.contact_paddle
        if rng.random() < 0.6:
            img.series_description = lat_view + (" XCCL" if img.extra and img.view == "CC" else "")
        if rng.random() < 0.06:  # a wrong magnification hint
            wrong = rng.integers(4)
            if wrong == 0:
                img.header_mag_factor = 1.8
            elif wrong == 1:
                img.spot_modifier = True
            elif wrong == 2 and profile.mag_paddle:
                img.paddle = profile.mag_paddle
            else:
                img.mag_modifier = True
    marker_hint_p = {"followup": 0.45, "followup_diag": 0.45, "stereo": 0.2, "needle_loc": 0.2}
    if img.markers and rng.random() < marker_hint_p.get(kind, 0.45):
        word = {"needle": "STEREO BX", "wire": "NEEDLE LOC"}.get(img.markers[0], "CLIP")
        word = str(rng.choice([word, "POST BX"])) if word == "CLIP" else word
        img.series_description = f"{lat_view} {word}"
    elif not img.markers and rng.random() < 0.01:  # a stale description
        img.series_description = f"{lat_view} POST BX"


def _header_mag_hint(img: _ImagePlan, profile: VendorProfile) -> bool:
    """What the image's own header claims (a spot-compression modifier is not a mag claim).

    Must agree with `mammo_dagster.core.imaging.dicom.header_facts` (a test checks it).
    """
    desc = (img.series_description or "").upper().split()
    return bool(
        img.mag_modifier
        or (img.header_mag_factor is not None and img.header_mag_factor >= 1.3)
        or (img.paddle is not None and img.paddle == profile.mag_paddle)
        or any(w in ("MAG", "MAGNIFICATION") for w in desc)
    )


def _header_marker_hint(img: _ImagePlan, study: _StudyPlan) -> bool:
    """Image-level claim only: the study description is a study-level fact."""
    return any(w in (img.series_description or "").upper() for w in MARKER_HINT_WORDS)


def _plan_archive(
    seed: int, studies: int, vendors: Sequence[str], mix: StudyMix
) -> list[_StudyPlan]:
    """Patients and their studies, in order, truncated to `studies` studies.

    Every vendor gets at least one study when `studies >= len(vendors)` (a patient's later
    study moves to a missing vendor's site). Images are planned per study from their own
    random stream, so a study's content does not depend on the studies before it.
    """
    rng = np.random.default_rng([seed, 0])
    order = [vendors[i] for i in rng.permutation(len(vendors))]
    used: set[str] = set()
    plans: list[_StudyPlan] = []
    p_idx = 0
    while len(plans) < studies:
        home = order[p_idx % len(order)]
        plans.extend(_plan_patient(seed, p_idx, vendors, home, used, mix))
        p_idx += 1
    plans = plans[:studies]
    for vendor in order:
        counts = {v: sum(p.vendor == v for p in plans) for v in order}
        if counts[vendor] or len(plans) < len(vendors):
            continue
        donor = max(order, key=lambda v: counts[v])
        idx = max(i for i, p in enumerate(plans) if p.vendor == donor)
        plans[idx].vendor = vendor
    for s_idx, study in enumerate(plans):
        _plan_study_images(np.random.default_rng([seed, 4, s_idx]), study)
    return plans


def plan_labels(
    *, studies: int, seed: int, vendors: Sequence[str] | None = None, mix: str = "enriched"
) -> list[dict[str, object]]:
    """The per-image labels `generate_archive` would write, without making any pixels.

    Keys: study_index, image_index, patient_id, vendor, view, laterality, has_biopsy_tool,
    has_mag_view, header_mag_hint, header_marker_hint. Cheap: use it for class-mix checks.
    """
    vendors = _check_vendors(vendors)
    out: list[dict[str, object]] = []
    for s_idx, study in enumerate(_plan_archive(seed, studies, vendors, study_mix(mix))):
        profile = VENDOR_PROFILES[study.vendor]
        for i_idx, ip in enumerate(study.images):
            out.append(
                {
                    "study_index": s_idx,
                    "image_index": i_idx,
                    "patient_id": study.patient_id,
                    "vendor": study.vendor,
                    "view": ip.view,
                    "laterality": ip.laterality,
                    "has_biopsy_tool": bool(ip.markers),
                    "has_mag_view": ip.mag,
                    "header_mag_hint": _header_mag_hint(ip, profile),
                    "header_marker_hint": _header_marker_hint(ip, study),
                }
            )
    return out


def _check_vendors(vendors: Sequence[str] | None) -> list[str]:
    vendors = list(vendors) if vendors else list(DEFAULT_VENDORS)
    unknown = [v for v in vendors if v not in VENDOR_PROFILES]
    if unknown:
        raise ValueError(f"unknown vendors {unknown}; use {sorted(VENDOR_PROFILES)}")
    return vendors
