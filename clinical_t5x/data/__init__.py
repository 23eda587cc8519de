"""Stage 1, notes to shards: MIMIC readers, DEID normalisation, de-duplication, `prepare`, the
prepared-shard format, and the synthetic MIMIC look-alikes that tests and the demo run on.

Imports no model code; TensorFlow only where shards are written or read.
"""
