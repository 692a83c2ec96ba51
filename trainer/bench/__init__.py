"""Benchmarks that print numbers (never timed tests). ``denoisrec bench ingest``: :mod:`.ingest`."""
