"""The plain-Python core: everything the pipeline does, without Dagster.

Rooms by domain; each owns its contracts, and imports run one way (imaging and the
store know nothing of models; nothing here imports `mammo_dagster.defs` or dagster):

- `home`, `files`, `metrics`: the data folder (`Home`), crash-safe file writing and the
  metrics every report uses (AUC, recall at a threshold), used by all.
- `imaging`: DICOM in (headers, decoding under a guard, limits), the two renderings
  (display) and the stored thumbnail with its patches, the model's input contract
  (`preprocess`), batch rendering and a drop's index; DICOM out (`dicom_write`).
- `store`: the DuckDB schema and its migrations (`db`), its named queries, the label
  events, the study CSV contract (`studies`), the header audit and prediction coverage.
- `model`: training (the `train` extra): datasets and patient splits, the networks,
  the second look, export to ONNX, weights, Grad-CAM and the model store.
- `prediction`: ONNX Runtime inference over files or drops.
- `learning`: active learning's selection, review mode's order, a simulated labeler.
- `pacs`: DICOMweb in (`pull`) and flags back as DICOM objects (`push`).
- `synthetic`: the generated archives that tests, benchmarks and the demo run on.
"""
