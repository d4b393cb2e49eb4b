"""Stopping a run by signal: SIGINT (Ctrl-C) and SIGTERM end it after its current step.

:class:`StopSignals` records a signal instead of raising it mid-step; :func:`timed` turns a
signal that comes while the trainer waits for data into :class:`WaitInterrupted`; the trainer
ends the run with :class:`TrainingInterrupted` once its checkpoint is written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from sslpipe.batch import Batch

__all__ = ["StopSignals", "TrainingInterrupted", "WaitInterrupted", "timed"]


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM stopped the run after its last whole step, and a checkpoint
    of that step was written: ``--resume`` continues as if never stopped.

    Attributes:
        signum: the signal; ``exit_code`` is ``128 + signum`` (130 for Ctrl-C), as a shell
            reports a process a signal ended.
        step: the steps done; ``checkpoint``: the checkpoint written (or kept) at that step.
    """

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        super().__init__(f"{signal.Signals(signum).name} at step {step}: checkpoint "
                         f"{checkpoint or 'none written yet'}; the same command with --resume "
                         "continues the run")


class WaitInterrupted(KeyboardInterrupt):
    """A stop signal that came while the trainer waited for a batch: nothing to finish."""


class StopSignals:
    """SIGINT and SIGTERM while a run trains: recorded, not raised mid-step.

    Python's own SIGINT handling raises KeyboardInterrupt wherever the main thread is, and
    where that is a ``__del__`` or a finalizer (a DataLoader iterator shutting its workers
    down at each epoch end) Python prints "Exception ignored" and carries on: an interrupted
    run trained on, sometimes to its end. Here the first signal sets ``signum``, which the
    loop reads after every step (one process) or at the next log step (every rank together);
    a signal that comes while the loop waits for data stops it at once (``immediate``), as
    does a second signal. A forked loader worker ignores them: its process ends it.
    """

    def __init__(self, immediate: bool) -> None:
        self.immediate = immediate
        self.signum: int | None = None
        self.waiting = False
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def wait(self) -> Iterator[None]:
        """Around a wait for data: a signal (an earlier one too) ends it at once."""
        self.waiting = self.immediate
        try:
            if self.waiting and self.signum is not None:
                raise WaitInterrupted
            yield
        finally:
            self.waiting = False

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: the trainer stops it
            return
        if self.signum is not None:
            raise KeyboardInterrupt  # a second signal: stop where it is
        self.signum = signum
        if self.waiting:
            raise WaitInterrupted


def timed(batches: Iterator[Batch], signals: StopSignals) -> Iterator[tuple[Batch, float]]:
    # The time spent in next() is the data wait: the share of a step the model sat idle.
    while True:
        t0 = time.perf_counter()
        try:
            with signals.wait():
                batch = next(batches)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0
