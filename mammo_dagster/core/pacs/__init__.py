"""The PACS as a drop source and a destination, over DICOMweb.

`source` (the endpoint from ``MAMMO_DICOMWEB_*``, retries, safe messages); `pull`
(QIDO-RS/WADO-RS into ``pacs-YYYYMMDD-NNN`` drops) with its `ledger` in the store
(the cursor, resumable pulls); `documents` (the Key Object Selection and SR that carry
the flags) and `push` (sending them with STOW-RS, idempotently, or to a folder).
"""
