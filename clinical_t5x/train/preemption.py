"""Stopping on SIGTERM (a preemption) at a step that every process of the job agrees on.

A checkpoint is a collective write: if one host stopped at step 120 and another went on to
121, the save would hang or mix steps. So each process records SIGTERM in a `StopFlag`, and
`StopAgreement` decides at fixed steps, the same on every host, whether any process has been
asked to stop:

* one process: the local flag, every step (free);
* several: JAX's preemption sync point when the cluster runs JAX's preemption service, and in
  any case an all-reduce (max) of the local flags every `period` steps. The all-reduce waits
  for the step in flight, so it runs at a cadence rather than every step. When the sync point
  is unavailable (a `RuntimeError`), that is logged once and the all-reduce alone decides, so a
  preemption never goes unnoticed for more than `period` steps.

No TensorFlow here.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM; the loop checks it between steps (a signal never interrupts a step)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        del frame
        log.warning("received signal %d: checkpointing at the next agreed stop step", signum)
        self.requested = True


def install_sigterm_handler() -> StopFlag:
    """A fresh `StopFlag` installed as this process's SIGTERM handler (on every host: any of
    them may be the one a scheduler terminates)."""
    flag = StopFlag()
    signal.signal(signal.SIGTERM, flag)
    return flag


class StopAgreement:
    """`agreement(step)` is True on every process at the same step once any process's flag is
    set (see the module docstring)."""

    def __init__(self, flag: StopFlag, period: int = 10) -> None:
        if period < 1:
            raise ValueError(f"stop check period must be >= 1 step, got {period}")
        self.flag = flag
        self.period = period
        self._sync_point = True  # until JAX says its preemption service is not running

    def __call__(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.flag.requested
        if self._sync_point and self._reached_sync_point(step):
            return True
        if step % self.period:
            return False
        local = np.asarray(int(self.flag.requested), np.int32)
        return bool(np.max(multihost_utils.process_allgather(local)))

    def _reached_sync_point(self, step: int) -> bool:
        try:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        except RuntimeError as err:
            self._sync_point = False
            log.warning("JAX's preemption service is not available (%s); SIGTERM on any host "
                        "is agreed by an all-reduce every %d steps instead", err, self.period)
            return False
