"""Stage 5, Hugging Face: export of t5x-layout checkpoints to `transformers` folders (with a
model card), import of T5/SciFive folders as initial checkpoints, and the fill-in check."""
