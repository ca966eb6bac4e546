"""Synthetic mammography archives: anatomy, biopsy markers, magnification views, DICOM files.

No real mammograms ship with the project, so the demo, the tests and the benchmarks run
on images made here. The images are built to make a model learn the real cues:

* anatomy: a compressed breast seen from the chest wall (skin line, thickness fall-off,
  fibroglandular 1/f^beta texture, ligaments, vessels, nipple, pectoral muscle on MLO);
* biopsy markers and tools: small metallic clips (ribbon, coil, cylinder, X, ring),
  localization wires and core-biopsy needles, all saturating after windowing;
* confounders: skin BBs (metal, but *not* a biopsy tool) and calcifications;
* magnification views: a magnified, collimated field with compression-paddle edges;
* headers that only sometimes say what the pixels show, and sometimes lie.

Coordinates: the breast is synthesized with the chest wall on the left edge (L breast) and
mirrored for the R breast. Attenuation-like images are float32 in [0, 1]: 0 is air, tissue
stays below ``TISSUE_MAX``, calcifications below ``CALC_MAX`` and metal is ``METAL`` (1.0);
``to_stored`` saturates everything at or above ``SATURATION``.

Rooms: `truth` (the attenuation scale, `SynthImage` and the ground-truth CSV),
`drawing` (noise, strokes, metal), `anatomy` (the breast and the mag field), `markers`
(markers, tools and confounders), `plan` (patients, studies, headers), `archive`
(`generate_archive`: stored values, DICOM files, the ground truth), `realism` (the ways
another hospital's archive differs) and `mixes` (study mixes). This package's opening
imports nothing: the `mammo` command reads `mixes` without numpy.
"""
