"""mammo-dagster: flag biopsy tools/markers and magnification views in mammography DICOMs."""

__version__ = "0.1.0"
