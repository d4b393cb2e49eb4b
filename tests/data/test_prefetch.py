"""run_ahead: a backend's per-step work on a background thread, in order, bounded, stoppable."""

from __future__ import annotations

import threading

import pytest
import torch

from sslpipe import Batch
from sslpipe.data.prefetch import run_ahead, run_stages


def _alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sslpipe-run-ahead")]


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


def test_stages_overlap_keep_order_and_stop():
    # stage 0 of item i + 1 runs while stage 1 still holds item i: a barrier both must reach
    both = threading.Barrier(2, timeout=10)
    seen = []

    def first(x):
        if x == 1:
            both.wait()  # item 1 decodes while item 0 is being augmented
        seen.append(("first", x, threading.current_thread().name))
        return x * 10

    def second(x):
        if x == 0:
            both.wait()
        seen.append(("second", x, threading.current_thread().name))
        return x + 1

    assert list(run_stages(range(5), [first, second], "cpu")) == [1, 11, 21, 31, 41]
    assert {n for s, _, n in seen if s == "first"} == {"sslpipe-run-ahead-0"}
    assert {n for s, _, n in seen if s == "second"} == {"sslpipe-run-ahead-1"}
    assert not _alive()


def test_a_stage_error_reaches_the_consumer_and_every_thread_ends():
    def second(x):
        if x == 2:
            raise ValueError("bad item 2")
        return x

    it = run_stages(range(10), [lambda x: x, second], "cpu")
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(ValueError, match="bad item 2"):
        next(it)
    assert not _alive()
