"""DICOM in and out, and the images made from it.

Owns: what a header says (`header`, no pixels), opening and decoding a file with typed
failures (`dicom`, `decode`) under per-file limits (`limits`); codecs' talk captured
as data (`guard`) and their crashes contained in worker processes (`pool`); the two
renderings, the radiologist's and the model's (`display`, with the header's VOI in
`voi`); the stored thumbnail with its lift map and patches (`thumbnails`, `lift`;
rendering contract versions live there); the model's input contract (`preprocess`);
batch rendering (`batch`) and a drop's index (`index`); and writing DICOM datasets
the way vendors do (`dicom_write`, with the vendors' header profiles in `vendors`).
"""
