"""Rows in: readers of JSONL, CSV and Parquet (and stdin, spooled), shards of an input,
and the prefix order of ``--group-by-prefix``. No network, no model."""
