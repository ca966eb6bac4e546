"""Unit tests: one core module (or labeler piece) at a time, in process, on tiny files."""
