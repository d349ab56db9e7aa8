"""The task graph both studies run: each stage is a typed task that names the tasks whose
results it needs; a task starts as soon as those are done, in worker processes (one torch
thread each), with one line per finished stage and an overall progress bar."""

from __future__ import annotations

import multiprocessing
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic

import torch
from tqdm.auto import tqdm

from emlab.study.common.logs import quiet_transformers
from emlab.study.common.stages import R, StageResult, Stages, report_stage


@dataclass(frozen=True, eq=False)
class Task(ABC, Generic[R]):
    """One cached stage of a study as a node of the graph. Subclasses (frozen dataclasses)
    hold what the stage depends on and name it, key it and compute it; `needs` are the tasks
    whose results `compute` receives, in order. Tasks compare by identity: build each once.
    `root` is the stage cache (stages.cache_root)."""

    root: str
    result: ClassVar[type[StageResult]]

    @property
    @abstractmethod
    def name(self) -> str:
        """The stage's name (its folder's prefix and its progress line)."""

    @abstractmethod
    def key(self) -> dict:
        """Exactly what the stage's result depends on (hashed into its folder name)."""

    @property
    def needs(self) -> tuple[Task, ...]:
        """Tasks whose results `compute` takes (none by default)."""
        return ()

    @property
    def cost(self) -> float:
        """Scheduling weight (about the stage's seconds): among ready tasks the costliest starts
        first, so that long tasks do not trail at the end."""
        return 1.0

    @abstractmethod
    def compute(self, folder: Path, *needed: StageResult) -> R:
        """Compute the stage in `folder` from the results of `needs`."""

    def folder(self) -> Path:
        """The stage's folder in the cache."""
        return Stages(self.root).folder(self.name, self.key())

    def run(self, *needed: StageResult) -> R:
        """The stage's result: cached, or computed now."""
        return Stages(self.root).run(
            self.name, self.key(), lambda folder: self.compute(folder, *needed), self.result
        )


def _run(task: Task, needed: list[StageResult]) -> StageResult:
    """`task.run` (in a worker or in this process) without transformers' bars and warnings."""
    with quiet_transformers():
        return task.run(*needed)


def _init_worker() -> None:
    torch.set_num_threads(1)
    tqdm.set_lock(threading.RLock())  # a forked worker must not share the parent's bar lock


def _ready() -> None:
    """A no-op task: submitting one makes the pool start its processes."""


def with_needs(tasks: Iterable[Task]) -> list[Task]:
    """`tasks` and every task they need, each once, needed tasks first."""
    out: dict[Task, None] = {}

    def add(task: Task) -> None:
        if task not in out:
            for need in task.needs:
                add(need)
            out[task] = None

    for task in tasks:
        add(task)
    return list(out)


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
            self._pool = ProcessPoolExecutor(
                max_workers=self.n, mp_context=context, initializer=_init_worker
            )
            self._pool.submit(_ready).result()  # forks now, while this process has no other thread
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def run(
        self, tasks: Iterable[Task], desc: str, progress: bool = True
    ) -> dict[Task, StageResult]:
        """Run `tasks` and the tasks they need, each once what it needs is done, at most n at a
        time; returns every task's result. When `progress`: a line per finished stage (name,
        seconds, computed or reused) and a bar `desc` over the stages, with an estimate of the
        time left, on stderr. The first failing task's error is raised."""
        pending = with_needs(tasks)
        results: dict[Task, StageResult] = {}
        running: dict[Future, Task] = {}
        bar = tqdm(total=len(pending), desc=desc, unit="stage", disable=not progress)
        while pending or running:
            ready = [t for t in pending if all(n in results for n in t.needs)]
            while ready and len(running) < self.n:
                task = max(ready, key=lambda t: t.cost)
                ready.remove(task)
                pending.remove(task)
                running[self._start(task, [results[n] for n in task.needs])] = task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                results[task] = future.result()
                if progress:
                    report_stage(results[task])
                bar.update(1)
        bar.close()
        return results

    def _start(self, task: Task, needed: list[StageResult]) -> Future:
        if self._pool is not None:
            return self._pool.submit(_run, task, needed)
        future: Future = Future()
        future.set_result(_run(task, needed))
        return future
