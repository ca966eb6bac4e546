"""The PACS as a drop source and a destination, over DICOMweb: studies in with
QIDO-RS/WADO-RS (`pull`), flags back as Key Object Selection and SR documents with
STOW-RS (`push`)."""
