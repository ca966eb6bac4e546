"""One dynamic partition per drop folder (never per image: SQLite storage breaks near 36k)."""

import dagster as dg

drops = dg.DynamicPartitionsDefinition(name="drops")
