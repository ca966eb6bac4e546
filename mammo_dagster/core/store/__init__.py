"""The DuckDB store: one schema with its migrations (`db`), the named queries that
every other layer reads and writes through (`queries`), the append-only label events
(`labels`), the study CSV contract (`studies`), the header-vs-image audit (`audit`)
and prediction coverage (`coverage`)."""
