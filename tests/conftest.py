"""Shared test setup: 8 forced CPU devices for partitioning tests (must precede importing jax)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
