"""SIGTERM on any host stops every host at the same step; a missing JAX preemption service is
logged once and never turns a preemption into silence."""

import logging
import os
import signal

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils

from clinical_t5x.train import preemption


class FakeJob:
    """Two processes seen from one: the other host's flag, and JAX's sync point."""

    def __init__(self, monkeypatch, sync_point_error: bool):
        self.other_host_flag = 0
        self.gathers: list[int] = []
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(multihost_utils, "process_allgather", self._allgather)
        monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", self._sync_point)
        self.sync_point_error = sync_point_error
        self.sync_point_calls = 0

    def _allgather(self, local):
        self.gathers.append(int(local))
        return np.array([int(local), self.other_host_flag], np.int32)

    def _sync_point(self, step):
        self.sync_point_calls += 1
        if self.sync_point_error:
            raise RuntimeError("preemption sync manager is not initialised")
        return False


def test_sigterm_on_another_host_stops_this_one_at_the_agreed_step(monkeypatch, caplog):
    job = FakeJob(monkeypatch, sync_point_error=True)
    agree = preemption.StopAgreement(preemption.StopFlag(), period=5)
    with caplog.at_level(logging.WARNING, logger="clinical_t5x.train.preemption"):
        decisions = {}
        for step in range(1, 21):
            if step == 7:
                job.other_host_flag = 1  # the scheduler terminated the other host
            decisions[step] = agree(step)
    # Checked at steps 5, 10, 15, 20 only: the first agreed step after the signal is 10.
    assert [s for s, stop in decisions.items() if stop] == [10, 15, 20]
    assert len(job.gathers) == 4
    # The unavailable service is logged once and not asked again.
    warnings = [r for r in caplog.records if "preemption service" in r.getMessage()]
    assert len(warnings) == 1
    assert job.sync_point_calls == 1


def test_local_sigterm_is_shared_with_the_other_hosts(monkeypatch):
    job = FakeJob(monkeypatch, sync_point_error=False)
    flag = preemption.StopFlag()
    agree = preemption.StopAgreement(flag, period=2)
    assert not agree(2)
    flag(signal.SIGTERM, None)
    assert not agree(3)  # between agreed steps nobody stops, this host included
    assert agree(4)
    assert job.gathers == [0, 1]  # what this host contributed to each all-reduce
    assert job.sync_point_calls == 3  # a working service is consulted every step


def test_one_process_stops_at_the_next_step(monkeypatch):
    flag = preemption.StopFlag()
    agree = preemption.StopAgreement(flag, period=100)
    assert not agree(1)
    flag.requested = True
    assert agree(2)


def test_installed_handler_records_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        flag = preemption.install_sigterm_handler()
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_period_must_be_positive():
    with pytest.raises(ValueError, match="period"):
        preemption.StopAgreement(preemption.StopFlag(), period=0)
