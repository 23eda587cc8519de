"""Stage 4, the built-in trainer (`python -m clinical_t5x.train`): the training loop, Orbax
checkpoints in t5x's layout and readers of t5x's formats, initialisation from imported weights,
summaries, and the CPU runtime settings.

Imports no TensorFlow at module level: the data side is reached lazily through SeqIO.
"""
