"""Dagster definitions, split by domain (ingest, model, predictions, sensors, ...).

Each module here is a thin layer over ``mammo_dagster.core``; ``definitions.py``
loads whatever this folder holds.
"""
