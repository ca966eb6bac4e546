"""The labeler: a standalone keyboard-driven FastHTML app on the DuckDB store.

It runs as its own process beside Dagster and never imports dagster; it shares
only the data folder (``$MAMMO_HOME``) and the core's store and label modules.
"""
