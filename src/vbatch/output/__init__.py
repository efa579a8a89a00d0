"""What a run writes: the one record schema, the writer, the ledger a resume reads, the
manifest, the output lock, shard merging and the output formats."""
