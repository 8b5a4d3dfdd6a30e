"""Training and evaluation data that carry sample keys, and the safe decoding of shard members."""
