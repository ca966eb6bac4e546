"""The standalone keyboard-driven labeling app (FastHTML). Never imports dagster.

Not built yet: it arrives with the labeler issue. It will read thumbnails and
write labels through ``mammo_dagster.core`` only.
"""
