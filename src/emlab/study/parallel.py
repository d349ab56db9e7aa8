"""Run independent study tasks in worker processes (one torch thread each) with a progress bar."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from typing import Any

import torch
from tqdm.auto import tqdm


def _init_worker() -> None:
    torch.set_num_threads(1)
    quiet_transformers()


def quiet_transformers() -> None:
    """No per-load progress bars or warnings from transformers inside the study's progress bars."""
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


class Workers:
    """A pool of `n` spawned processes kept for the whole study (workers import torch once);
    with n == 1 tasks run in this process."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._pool: Executor | None = None

    def __enter__(self) -> Workers:
        if self.n > 1:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.n, mp_context=context, initializer=_init_worker)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def map(self, fn: Callable[..., dict], tasks: Sequence[tuple[Any, ...]], desc: str) -> list[dict]:
        """[fn(*task) for task in tasks], in task order."""
        bar = tqdm(total=len(tasks), desc=desc)
        results: list[Any] = [None] * len(tasks)
        if self._pool is None:
            for i, task in enumerate(tasks):
                results[i] = fn(*task)
                bar.update(1)
        else:
            futures = {self._pool.submit(fn, *task): i for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        bar.close()
        return results
