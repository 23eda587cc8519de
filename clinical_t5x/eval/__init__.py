"""Stage 6, is it any good: the downstream benchmarks' metrics (MedNLI, RadQA, CLIP)."""
