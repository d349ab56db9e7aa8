"""The task graph both studies run: each stage is a typed task that names the tasks whose
results it needs; a task starts as soon as those are done, in worker processes (one torch
thread each), with one line per finished stage and an overall progress bar."""

from __future__ import annotations

import math
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
        """Weight (finite, in proportion to the stage's seconds): among ready tasks the costliest
        starts first, so that long tasks do not trail at the end, and the overall bar's estimate
        of the time left counts each stage by it."""
        return 1.0

    @property
    def follows(self) -> Task | None:
        """A task of `needs` that this one runs right after, in the same process, taking over
        what it kept in memory (see `compute_kept`), so that e.g. a model is not loaded twice.
        It does so whenever its other needs are done by the time that task starts; otherwise
        it runs on its own. None (the default): it always runs on its own."""
        return None

    @abstractmethod
    def compute(self, folder: Path, *needed: StageResult) -> R:
        """Compute the stage in `folder` from the results of `needs`."""

    def compute_kept(self, folder: Path, kept: object, *needed: StageResult) -> tuple[R, object]:
        """`compute`, given what the task this one `follows` kept in memory (`kept`; None when
        there is none: that task was reused, or this one runs on its own), returning also what
        it keeps for the tasks that follow it. By default: `compute`, keeping nothing. The
        result must not depend on `kept` being there."""
        return self.compute(folder, *needed), None

    def folder(self) -> Path:
        """The stage's folder in the cache."""
        return Stages(self.root).folder(self.name, self.key())

    def run(self, *needed: StageResult, kept: object = None) -> tuple[R, object]:
        """The stage's result, cached or computed now (`compute_kept` with `kept`), and what it
        keeps in memory for the tasks that follow it (None when reused)."""
        out: list[object] = [None]

        def compute(folder: Path) -> R:
            result, out[0] = self.compute_kept(folder, kept, *needed)
            return result

        return Stages(self.root).run(self.name, self.key(), compute, self.result), out[0]


Chain = list[tuple[Task, list[StageResult | None]]]
"""A task and the tasks that follow it, each with the results of its needs (None in place of
the first task's result, which they are given once it is done)."""


def _run(chain: Chain) -> list[StageResult]:
    """Run a chain's tasks in order (in a worker or in this process) without transformers' bars
    and warnings, the followers taking over what the first task kept; their results."""
    (first, needed), *followers = chain
    with quiet_transformers():
        result, kept = first.run(*needed)
        return [result] + [
            task.run(*[result if r is None else r for r in needs], kept=kept)[0]
            for task, needs in followers
        ]


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


class Progress:
    """The overall bar of a run of tasks: the share of their cost done, with tqdm's estimate of
    the time left from the cost done per second so far (reused stages leave the total: their
    cost is not spent), after the count of finished stages, e.g.
    `study 9/68 stages:  41%|####1     | [01:12<01:44]`."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"

    def __init__(self, tasks: list[Task], desc: str, show: bool) -> None:
        costs = [t.cost for t in tasks]
        if not all(math.isfinite(c) and c > 0 for c in costs):
            raise ValueError(f"task costs must be finite and positive, not {costs}")
        self.desc, self.n, self.done = desc, len(tasks), 0
        self.bar = tqdm(
            total=sum(costs),
            desc=self._desc(),
            bar_format=self.FORMAT,
            smoothing=0,  # the mean rate: stages finish in lumps
            disable=not show,
        )

    def _desc(self) -> str:
        return f"{self.desc} {self.done}/{self.n} stages"

    def finished(self, task: Task, result: StageResult) -> None:
        """Count a finished stage: its cost is done (computed) or leaves the total (reused)."""
        self.done += 1
        self.bar.set_description_str(self._desc(), refresh=False)
        if result.reused:
            self.bar.total -= task.cost
            self.bar.refresh()
        else:
            self.bar.update(task.cost)

    def close(self) -> None:
        """End the bar at 100% (also when every stage was reused)."""
        self.bar.total = self.bar.n = self.bar.n or 1.0
        self.bar.close()


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
        time; a task that `follows` another starts with it when it can. Returns every task's
        result. When `progress`: a line per finished stage (name,
        seconds, computed or reused) and a bar `desc` over the stages, with an estimate of the
        time left (see Progress), on stderr. The first failing task's error is raised."""
        pending = with_needs(tasks)
        results: dict[Task, StageResult] = {}
        running: dict[Future, list[Task]] = {}
        bar = Progress(pending, desc, progress)
        while pending or running:
            ready = [t for t in pending if all(n in results for n in t.needs)]
            while ready and len(running) < self.n:
                task = max(ready, key=lambda t: t.cost)
                ready.remove(task)
                chain = [task] + [
                    f
                    for f in pending
                    if f.follows is task and all(n is task or n in results for n in f.needs)
                ]
                for t in chain:
                    pending.remove(t)
                running[self._start([(t, [results.get(n) for n in t.needs]) for t in chain])] = (
                    chain
                )
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                for task, result in zip(running.pop(future), future.result(), strict=True):
                    results[task] = result
                    if progress:
                        report_stage(result)
                    bar.finished(task, result)
        bar.close()
        return results

    def _start(self, chain: Chain) -> Future:
        if self._pool is not None:
            return self._pool.submit(_run, chain)
        future: Future = Future()
        future.set_result(_run(chain))
        return future
