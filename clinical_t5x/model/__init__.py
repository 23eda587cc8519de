"""Stage 3, the model: the Flax T5 (t5x's parameter layout), losses, Adafactor, SPMD
partitioning and the jitted train/eval steps.

Imports neither TensorFlow nor seqio, so it runs on accelerator images without them.
"""
