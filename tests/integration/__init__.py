"""Integration tests: Dagster materializations and sensors, the labeler app and server,
the `mammo` command, training; the slow end-to-end ones are marked `slow`."""
