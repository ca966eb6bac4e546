"""Writing an archive: attenuation to stored values, the plan drawn and encoded as DICOM
files, and the ground-truth CSV beside it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from mammo_dagster.core.imaging.dicom_write import (
    LOSSY_SYNTAXES,
    TRANSFER_SYNTAXES,
    ImageHeader,
    build_dataset,
    encode,
    stable_uid,
    write,
)
from mammo_dagster.core.imaging.vendors import VENDOR_PROFILES, VendorProfile
from mammo_dagster.core.synthetic.mixes import study_mix
from mammo_dagster.core.synthetic.realism import Realism

from .anatomy import synth_breast
from .drawing import MetalLayer, _box_dilate, _smoothstep
from .markers import add_calcifications, add_implant, add_lead_letters, add_marker, add_skin_marker
from .plan import (
    _check_vendors,
    _header_mag_hint,
    _header_marker_hint,
    _ImagePlan,
    _plan_archive,
    _StudyPlan,
)
from .truth import METAL_MARGIN, SATURATION, SynthImage, write_ground_truth

# ---------------------------------------------------------------------------------------------
# stored values


def padding_value(profile: VendorProfile) -> int | None:
    """The Pixel Padding Value `to_stored` writes for `profile` (air end), or None."""
    if not profile.pixel_padding:
        return None
    return profile.max_stored if profile.photometric == "MONOCHROME1" else 0


def to_stored(
    img: np.ndarray,
    mask: np.ndarray,
    profile: VendorProfile,
    rng: np.random.Generator,
    layer: MetalLayer | None = None,
) -> np.ndarray:
    """Map to stored pixel values for the profile (MONOCHROME2: dense/metal = high values;
    MONOCHROME1: inverted, dense/metal = LOW values; background = air). Metal reaches the
    extreme end of the stored range (max for MONO2, 0 or near for MONO1).

    Adds a background offset, a mild gain curve and quantum-like noise (almost none in
    air, which vendors' processing flattens). Where the profile
    has pixel padding, air more than ~2% of the image height away from the breast is set
    to `padding_value(profile)` and no other pixel takes that value.

    Metal that `layer` records below the extreme gets its plateau there (with noise), never
    darker than the tissue under it plus `METAL_MARGIN`.
    """
    maxv = profile.max_stored
    img = np.asarray(img, dtype=np.float32)
    gamma = rng.uniform(0.9, 1.1)
    bg = rng.uniform(0.01, 0.05)
    sigma = rng.uniform(0.003, 0.007)
    s = np.clip(img * (1.0 / SATURATION), 0.0, 1.0)
    s **= gamma
    s *= 1.0 - bg
    s += bg
    # quantum-like noise in tissue; processed For Presentation images flatten the air
    # (vendors clamp it), which is also why real archives compress 2.5-4:1 losslessly
    noise = rng.standard_normal(s.shape, dtype=np.float32)
    noise *= 0.03 + 0.97 * _smoothstep(img, 0.005, 0.04)
    s += sigma * noise
    s[img >= SATURATION] = 1.0
    if layer is not None and layer.used:
        below = layer.levels < 1.0
        under = np.clip(layer.tissue[below] * (1.0 / SATURATION), 0.0, 1.0) ** gamma
        under = under * (1.0 - bg) + bg
        cap = np.maximum(layer.levels[below], under + METAL_MARGIN) + sigma * noise[below]
        s[below] = np.minimum(s[below], cap)
    np.clip(s, 0.0, 1.0, out=s)
    stored = np.rint(s * maxv).astype(np.uint16)
    if profile.photometric == "MONOCHROME1":
        stored = maxv - stored
    pad = padding_value(profile)
    if pad is not None:
        r = max(2, img.shape[0] // 50)
        region = ~_box_dilate(mask, r) & (img < 0.1)
        if pad == 0:
            np.maximum(stored, 1, out=stored)
        else:
            np.minimum(stored, pad - 1, out=stored)
        stored[region] = pad
    return stored


# ---------------------------------------------------------------------------------------------
# archive writing


def _relative_path(study: _StudyPlan, s_idx: int, i_idx: int, sop: str) -> str:
    """Vendor-flavoured folder layout; no patient identifiers in paths."""
    pdir = f"P{study.patient_index + 1:05d}"
    if study.vendor == "hologic":
        return f"{pdir}/{study.study_date}_{study.accession}/IM{i_idx + 1:04d}"
    if study.vendor == "ge":
        return f"{pdir}/ST{s_idx + 1:05d}/SE{i_idx + 1:03d}/IM0001.dcm"
    if study.vendor == "siemens":
        return f"{pdir}/{study.accession}/{sop}.dcm"
    return f"{pdir}/{study.study_date}/S{i_idx + 1:03d}/I{s_idx * 10 + i_idx + 1:07d}"


def _resolve_syntaxes(names: Sequence[str]) -> list[str]:
    by_uid = {str(uid): name for name, uid in TRANSFER_SYNTAXES.items()}
    out = []
    for n in names:
        if n in TRANSFER_SYNTAXES:
            out.append(n)
        elif str(n) in by_uid:
            out.append(by_uid[str(n)])
        else:
            raise ValueError(f"unknown transfer syntax {n!r}; use {sorted(TRANSFER_SYNTAXES)}")
    return out


def generate_archive(
    out: Path,
    *,
    studies: int,
    seed: int,
    size: Literal["full", "small"] = "small",
    vendors: Sequence[str] | None = None,
    transfer_syntaxes: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    ground_truth: Path | None = None,
    mix: str = "enriched",
    realism: Realism | None = None,
) -> list[SynthImage]:
    """Write a synthetic archive under out/ and out/ground_truth.csv; deterministic by seed.

    `ground_truth` puts the CSV elsewhere (e.g. outside a drop folder that a pipeline
    scans); its paths are then absolute.

    Studies hold 4-8 images; a patient may have several studies (later ones keep earlier
    clips) and may change vendor between them. size="small" divides the matrix by 8 and
    multiplies the pixel spacing by 8. Transfer syntaxes (names of
    `dicom_write.TRANSFER_SYNTAXES` or UIDs) are cycled through within each study, from the
    vendor's list or from `transfer_syntaxes` when given. `progress` receives the number of
    images written so far after each image. `mix` names the study mix (`MIXES`).
    `realism` shifts the archive away from the base generator (see `core.synthetic.realism`): the
    same studies, changed only as it says, drawn from random streams of their own. A
    shifted or lossy archive gets UIDs of its own (a lossy copy is a new instance).
    """
    out = Path(out)
    if size not in ("full", "small"):
        raise ValueError(f"size must be 'full' or 'small', got {size!r}")
    vendors = _check_vendors(vendors)
    forced = _resolve_syntaxes(transfer_syntaxes) if transfer_syntaxes else None
    realism = realism or Realism()
    plans = _plan_archive(seed, studies, vendors, study_mix(mix))
    uid_key: tuple = ("mammo-synth", seed, size, ",".join(vendors))
    if mix != "enriched":  # another mix's archive of the same seed holds other images
        uid_key += (mix,)
    lossy = sorted({n for n in forced or () if TRANSFER_SYNTAXES[n] in LOSSY_SYNTAXES})
    if realism != Realism() or lossy:
        uid_key += (repr(realism), ",".join(lossy))
    images: list[SynthImage] = []
    for s_idx, study in enumerate(plans):
        profile = VENDOR_PROFILES[study.vendor]
        div = 8 if size == "small" else 1
        scale = realism.matrix_scale
        rows, cols = round(profile.rows // div * scale), round(profile.columns // div * scale)
        ps = profile.pixel_spacing_mm * div / scale
        syntaxes = forced or list(profile.transfer_syntaxes)
        ts_offset = int(np.random.default_rng([seed, 3, s_idx]).integers(len(syntaxes)))
        study_uid = str(stable_uid(*uid_key, "study", s_idx))
        for i_idx, ip in enumerate(study.images):
            rng = np.random.default_rng([seed, 2, s_idx, i_idx])
            img, mask = synth_breast(
                rng,
                rows,
                cols,
                view=ip.view,
                laterality=ip.laterality,
                mag=ip.mag,
                pixel_spacing_mm=ps,
                mag_factor=ip.mag_factor,
                density=study.density,
                paddle_band=realism.paddle_band,
            )
            ps_breast = ps / ip.mag_factor
            kinds, confounders, layer, boxes = _burn_objects(
                rng, np.random.default_rng([seed, 7, s_idx, i_idx]), img, mask, ip,
                ps_breast, realism,
            )  # fmt: skip
            stored = to_stored(img, mask, profile, rng, layer)
            sop = str(stable_uid(*uid_key, "sop", s_idx, i_idx))
            series = str(stable_uid(*uid_key, "series", s_idx, i_idx))
            header = ImageHeader(
                sop_instance_uid=sop,
                study_instance_uid=study_uid,
                series_instance_uid=series,
                patient_id=study.patient_id,
                patient_name=study.patient_name,
                laterality=ip.laterality,  # type: ignore[arg-type]
                view=ip.view,  # type: ignore[arg-type]
                mag_modifier=ip.mag_modifier,
                spot_modifier=ip.spot_modifier,
                mag_factor=ip.header_mag_factor,
                paddle=ip.paddle,
                series_description=ip.series_description,
                study_description=study.study_description,
                study_date=study.study_date,
                accession=study.accession,
                instance_number=i_idx + 1,
            )
            ds = build_dataset(  # the header's pixel spacing matches the (small) matrix
                stored,
                dataclasses.replace(profile, pixel_spacing_mm=ps),
                header,
                padding_value=padding_value(profile),
                declared_bits=realism.declared_bits
                if (realism.declared_bits or 0) > profile.bits_stored
                else None,
            )
            ts_name = syntaxes[(ts_offset + i_idx) % len(syntaxes)]
            ds = encode(ds, ts_name, j2k_ratio=realism.j2k_ratio, jpeg_quality=realism.jpeg_quality)
            path = write(ds, out / _relative_path(study, s_idx, i_idx, sop))
            images.append(
                SynthImage(
                    path=path,
                    sop_instance_uid=sop,
                    study_instance_uid=study_uid,
                    series_instance_uid=series,
                    patient_id=study.patient_id,
                    has_biopsy_tool=bool(kinds),
                    has_mag_view=ip.mag,
                    vendor=study.vendor,
                    transfer_syntax=str(TRANSFER_SYNTAXES[ts_name]),
                    view=ip.view,
                    laterality=ip.laterality,
                    marker_kind="+".join(kinds + confounders),
                    header_mag_hint=_header_mag_hint(ip, profile),
                    header_marker_hint=_header_marker_hint(ip, study),
                    marker_boxes=";".join(" ".join(map(str, b)) for b in boxes),
                )
            )
            if progress is not None:
                progress(len(images))
    write_ground_truth(images, ground_truth or out / "ground_truth.csv")
    return images


def _burn_objects(
    rng: np.random.Generator,
    shift_rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    ip: _ImagePlan,
    ps: float,
    realism: Realism,
) -> tuple[list[str], list[str], MetalLayer | None, list[tuple[int, int, int, int]]]:
    """The planned markers and confounders, then the realism's distractors, in place.

    Returns (biopsy kinds, confounders, the metal layer when metal moves off the
    extreme, each biopsy marker's bounding box (see `_changed_box`)). The plan's
    objects draw from `rng` exactly as the base generator does; everything the realism
    adds or changes draws from `shift_rng`.
    """
    extra = set(realism.distractors)
    layer = MetalLayer(img.shape) if realism.shifts_metal else None

    def metal(level: tuple[float, float]) -> MetalLayer | None:
        if layer is not None:
            layer.level = float(shift_rng.uniform(*level))
        return layer

    kinds: list[str] = []
    confounders: list[str] = []
    if "implants" in extra:
        confounders.append(add_implant(shift_rng, img, mask, pixel_spacing_mm=ps))
    if ip.calcs:
        confounders.append(add_calcifications(rng, img, mask, pixel_spacing_mm=ps))
    elif "calcs" in extra:
        confounders.append(add_calcifications(shift_rng, img, mask, pixel_spacing_mm=ps))
    boxes = []
    for k in ip.markers:
        lay = metal(realism.metal_level)
        before = img.copy()
        kinds.append(add_marker(rng, img, mask, pixel_spacing_mm=ps, kind=k, layer=lay))
        boxes.append(_changed_box(before, img))
    if ip.skin_bb:
        lay = metal(realism.metal_level)
        confounders.append(add_skin_marker(rng, img, mask, pixel_spacing_mm=ps, layer=lay))
    elif "bbs" in extra:
        lay = metal(realism.metal_level)
        confounders.append(add_skin_marker(shift_rng, img, mask, pixel_spacing_mm=ps, layer=lay))
    if "letters" in extra:
        lay = metal(realism.letter_level)
        text = f"{ip.laterality}{ip.view}"
        confounders.append(
            add_lead_letters(shift_rng, img, mask, text, pixel_spacing_mm=ps, layer=lay)
        )
    return kinds, [c for c in confounders if c], layer, boxes


def _changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), half-open: the smallest box holding every changed pixel."""
    changed = after != before
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if not len(rows):
        return (0, 0, 0, 0)
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
