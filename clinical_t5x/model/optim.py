"""Adafactor with t5x's defaults and the inverse-square-root learning-rate schedule (optax).

t5x's pretraining recipe: `adafactor.Adafactor(decay_rate=0.8, step_offset=0)` (factored second
moments for dims >= 128, update clipping at RMS 1.0, updates scaled by the parameter's RMS,
eps 1e-30, no momentum) with `learning_rate = base / sqrt(max(step, warmup_steps))`
(t5x `create_learning_rate_scheduler(factors='constant * rsqrt_decay')`): constant at
base/sqrt(warmup) during warm-up, then decaying. Clinical-T5 used a 40k-step warm-up.
"""
from __future__ import annotations

from typing import Any

import gin
import jax.numpy as jnp
import optax


# Everything but the learning rate stays a Python constant (shape logic depends on some).
_STATIC_ADAFACTOR_ARGS = ("min_dim_size_to_factor", "decay_rate", "multiply_by_parameter_scale",
                          "clipping_threshold", "momentum", "weight_decay_rate", "eps", "factored",
                          "decay_offset", "dtype_momentum", "weight_decay_mask")


@gin.configurable(module="optim")
def rsqrt_schedule(base_learning_rate: float = 1.0,
                   warmup_steps: int = 10000) -> optax.Schedule:
    """`base / sqrt(max(step, warmup_steps))`, step counted from 0 (as t5x)."""
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")

    def schedule(step: Any) -> Any:
        return base_learning_rate / jnp.sqrt(jnp.maximum(jnp.asarray(step, jnp.float32),
                                                         float(warmup_steps)))

    return schedule


@gin.configurable(module="optim")
def make_optimizer(base_learning_rate: float = 1.0, warmup_steps: int = 10000,
                   decay_rate: float = 0.8, clipping_threshold: float | None = 1.0,
                   min_dim_size_to_factor: int = 128, multiply_by_parameter_scale: bool = True,
                   eps: float = 1e-30, momentum: float | None = None,
                   weight_decay_rate: float | None = None,
                   factored: bool = True,
                   schedule: str = "rsqrt") -> optax.GradientTransformation:
    """Adafactor (t5x defaults) driven by `rsqrt_schedule`, or (`schedule='constant'`) at
    `base_learning_rate` throughout, the fine-tuning recipe (t5x's finetune runs: 1e-3,
    the Clinical-T5 paper's downstream runs: 1e-4).

    Wrapped in `optax.inject_hyperparams` so the learning rate used by each update is in the
    optimiser state (`opt_state.hyperparams["learning_rate"]`) for logging, no recomputation.
    Gin: bind `optim.make_optimizer.warmup_steps = %WARMUP_STEPS`.
    """
    schedules = {"rsqrt": lambda: rsqrt_schedule(base_learning_rate, warmup_steps),
                 "constant": lambda: optax.constant_schedule(base_learning_rate)}
    if schedule not in schedules:
        raise ValueError(f"schedule must be one of {sorted(schedules)}, got {schedule!r}")
    return optax.inject_hyperparams(optax.adafactor, static_args=_STATIC_ADAFACTOR_ARGS)(
        learning_rate=schedules[schedule](),
        min_dim_size_to_factor=min_dim_size_to_factor,
        decay_rate=decay_rate,
        multiply_by_parameter_scale=multiply_by_parameter_scale,
        clipping_threshold=clipping_threshold,
        momentum=momentum,
        weight_decay_rate=weight_decay_rate,
        eps=eps,
        factored=factored,
    )


def current_learning_rate(opt_state: Any) -> Any:
    """The learning rate stored by `make_optimizer`'s injected hyperparameters, else None."""
    hyperparams = getattr(opt_state, "hyperparams", None)
    return None if hyperparams is None else hyperparams.get("learning_rate")
