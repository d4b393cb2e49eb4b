"""run_ahead: a backend's per-step work on a background thread, in order, bounded, stoppable."""

from __future__ import annotations

import threading

import pytest
import torch

from sslpipe import Batch
from sslpipe.data.prefetch import run_ahead


def _alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sslpipe-run-ahead"]


def test_results_in_order_from_another_thread_at_most_depth_ahead():
    made, ran = [], []
    consumed = 0

    def jobs():
        for step in range(7):
            made.append((step, threading.current_thread().name))
            assert step - consumed <= 2  # never more than depth=2 ahead of the consumer

            def job(step=step):
                ran.append(threading.current_thread().name)
                return Batch(torch.full((1,), step)), [("corrupt", f"k{step}", "why")]
            yield job

    out = []
    for batch, events in run_ahead(jobs(), "cpu", depth=2):
        out.append((int(batch.inputs), events[0][1]))
        consumed += 1
    assert out == [(i, f"k{i}") for i in range(7)]
    main = threading.current_thread().name
    assert all(name == main for _, name in made)  # jobs are made on the calling thread
    assert set(ran) == {"sslpipe-run-ahead"}  # and run on the background one
    assert not _alive()


def test_a_job_error_is_raised_to_the_consumer_and_the_thread_ends():
    def jobs():
        yield lambda: (Batch(torch.zeros(1)), [])
        yield lambda: (_ for _ in ()).throw(ValueError("bad sample x.tar:00000003"))
        yield lambda: (Batch(torch.ones(1)), [])

    it = run_ahead(jobs(), "cpu")
    next(it)
    with pytest.raises(ValueError, match="x.tar:00000003"):
        next(it)
    assert not _alive()


def test_closing_early_stops_the_thread_and_closes_the_source():
    closed = []

    def jobs():
        try:
            for step in range(100):
                yield lambda step=step: (Batch(torch.full((1,), step)), [])
        finally:
            closed.append(True)

    it = run_ahead(jobs(), "cpu", depth=3)
    assert int(next(it)[0].inputs) == 0
    it.close()
    assert closed == [True] and not _alive()


@pytest.mark.gpu
def test_on_cuda_the_consumer_sees_each_jobs_finished_work():
    def jobs():
        for step in range(6):
            def job(step=step):
                x = torch.full((2048, 2048), float(step), device="cuda")
                for _ in range(20):  # long enough that a missing wait would show stale data
                    x = x @ torch.eye(2048, device="cuda")
                return Batch(x), []
            yield job

    for step, (batch, _) in enumerate(run_ahead(jobs(), "cuda", depth=2)):
        assert batch.inputs.is_cuda and float(batch.inputs.mean()) == float(step)
