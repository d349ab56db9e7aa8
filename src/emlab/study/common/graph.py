"""Run the study's tasks in worker processes (one torch thread each), each as soon as the
tasks it needs are done, with a progress bar."""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm


def _init_worker() -> None:
    torch.set_num_threads(1)
    tqdm.set_lock(threading.RLock())  # a forked worker must not share the parent's bar lock
    quiet_transformers()


def _ready() -> None:
    """A no-op task: submitting one makes the pool start its processes."""


def quiet_transformers() -> None:
    """No per-load progress bars or warnings from transformers inside the study's progress bars."""
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


@dataclass(frozen=True)
class Task:
    """`fn(*args)` (picklable, returns a dict), named by `key`; among ready tasks the one with
    the largest `cost` starts first, so that long tasks do not trail at the end."""

    key: Hashable
    fn: Callable[..., dict]
    args: tuple[Any, ...]
    cost: float = 1.0


class Workers:
    """A pool of `n` processes kept for the whole study; with n == 1 tasks run in this process.
    On Linux the workers are forks of this process, started before it runs any torch operation
    or progress bar, so they inherit its imports (a spawned worker spends about 13 s importing
    torch, transformers and peft again); elsewhere they are spawned."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        if self.n > 1:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.n, mp_context=context, initializer=_init_worker)
            self._pool.submit(_ready).result()  # forks now, while this process has no other thread
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def run(
        self, start: Iterable[Task], then: Callable[[Task, dict], Iterable[Task]], total: int, desc: str, progress: bool = True
    ) -> None:
        """Run `start` and every task that `then(task, result)` returns once `task` is done
        (`then` sees each result in this process), at most n at a time; a progress bar `desc`
        over the `total` tasks on stderr when `progress`."""
        ready = list(start)
        running: dict[Future, Task] = {}
        bar = tqdm(total=total, desc=desc, disable=not progress)
        while ready or running:
            while ready and len(running) < self.n:
                task = max(ready, key=lambda t: t.cost)
                ready.remove(task)
                running[self._start(task)] = task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                ready.extend(then(task, future.result()))
                bar.update(1)
        bar.close()

    def _start(self, task: Task) -> Future:
        if self._pool is not None:
            return self._pool.submit(task.fn, *task.args)
        future: Future = Future()
        future.set_result(task.fn(*task.args))
        return future
