"""SIGKILL a forked worker at random points of its progress.

The worker is a fork of the test process (torch already imported, so starting one costs
milliseconds instead of a fresh interpreter's seconds); SIGKILL ends it as abruptly as a
killed job: no exception handler, `finally` or atexit hook runs, and writes in flight are cut.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Callable

from tqdm import tqdm as std_tqdm
from tqdm.auto import tqdm as auto_tqdm


def fork(target: Callable[[], object]) -> multiprocessing.Process:
    """Start `target()` in a forked process (closures need no pickling). Its progress bars
    take a lock of their own: tqdm's default lock is shared with forks, and a fork killed
    while drawing a bar would leave it held for every other process."""

    def run() -> None:
        for bar_class in {std_tqdm, auto_tqdm}:
            bar_class.set_lock(threading.RLock())
        target()

    process = multiprocessing.get_context("fork").Process(target=run, daemon=True)
    process.start()
    return process


def run_to_end(target: Callable[[], object], timeout: float = 300) -> None:
    """Run `target()` in a forked process and check that it finished cleanly."""
    process = fork(target)
    process.join(timeout)
    assert process.exitcode == 0, f"worker ended with exit code {process.exitcode}"


def kill_when(
    target: Callable[[], object],
    progress: Callable[[], float],
    at: float,
    rng: random.Random,
    jitter: float = 0.03,
    timeout: float = 300,
) -> bool:
    """Fork `target()`; SIGKILL it once `progress() >= at`, after a random 0-`jitter` seconds so
    the kill can land anywhere, inside a write too. Returns True if it was killed, False if it
    finished first."""
    process = fork(target)
    deadline = time.monotonic() + timeout
    while process.is_alive() and progress() < at:
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.005)
    process.join(rng.uniform(0.0, jitter))
    if not process.is_alive():
        assert process.exitcode == 0, f"worker failed with exit code {process.exitcode}"
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert process.exitcode == -signal.SIGKILL
    return True


def kill_at(
    target: Callable[[], object],
    module: object,
    name: str,
    when: Callable[..., bool],
    timeout: float = 300,
) -> None:
    """Fork `target()` with the function `module.name` wrapped (in the fork only) so that the
    fork SIGKILLs itself just before the first call whose arguments satisfy `when`; check that
    it was killed there. A kill at a chosen point: e.g. `write_text_atomic` of a run's DONE."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        if when(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    def run() -> None:
        setattr(module, name, wrapped)
        target()

    process = fork(run)
    process.join(timeout)
    assert process.exitcode == -signal.SIGKILL, (
        f"not killed at {name} (exit code {process.exitcode})"
    )


def random_points(seed: int, n: int, low: float, high: float) -> list[float]:
    """`n` increasing random points in [low, high)."""
    rng = random.Random(seed)
    return sorted(rng.uniform(low, high) for _ in range(n))
