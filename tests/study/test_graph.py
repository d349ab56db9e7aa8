"""The studies' task graph: a task starts once the tasks it needs are done, with their
results; costly ones first; each stage is cached by its key and reported as it finishes."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from emlab.study.common.graph import Task, Workers, with_needs
from emlab.study.common.stages import StageResult


class Number(StageResult):
    value: int


@dataclass(frozen=True, eq=False)
class Square(Task[Number]):
    """Squares `x`, or the value of the task it needs when there is one."""

    x: int
    parent: Square | None = None
    weight: float = 1.0
    result = Number

    @property
    def name(self) -> str:
        return f"square_{self.x}" + ("_child" if self.parent else "")

    def key(self) -> dict:
        return {"x": self.x, "parent": self.parent.key() if self.parent else None}

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.parent,) if self.parent else ()

    @property
    def cost(self) -> float:
        return self.weight

    def compute(self, folder: Path, parent: Number | None = None) -> Number:
        (folder / "computed").write_text("1")
        value = parent.value if parent else self.x
        return Number(value=value * value)

    def compute_kept(
        self, folder: Path, kept: object, parent: Number | None = None
    ) -> tuple[Number, object]:
        return self.compute(folder, parent), f"{self.name} in memory"


class Told(StageResult):
    kept: str | None


@dataclass(frozen=True, eq=False)
class Follower(Task[Told]):
    """Follows `parent` (and needs `other` too, if given); its result is what it was given of
    what `parent` kept in memory."""

    parent: Square
    tag: int
    other: Square | None = None
    result = Told

    @property
    def name(self) -> str:
        return f"follower_{self.tag}_of_{self.parent.name}"

    def key(self) -> dict:
        return {"parent": self.parent.key(), "tag": self.tag}

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.parent, self.other) if self.other else (self.parent,)

    @property
    def follows(self) -> Task:
        return self.parent

    def compute(self, folder: Path, *needed: Number) -> Told:
        return self.compute_kept(folder, None, *needed)[0]

    def compute_kept(self, folder: Path, kept: object, *needed: Number) -> tuple[Told, None]:
        assert needed[0].value == self.parent.x**2
        return Told(kept=kept), None


@pytest.mark.parametrize("n", [1, 2])
def test_children_run_after_their_parents_with_the_parents_results(tmp_path, n):
    parents = {x: Square(str(tmp_path), x) for x in (2, 3)}
    children = {x: Square(str(tmp_path), x, parent=p) for x, p in parents.items()}
    with Workers(n) as workers:
        results = workers.run(
            children.values(), desc="test", progress=False
        )  # parents come in as needed
    assert {t.name: r.value for t, r in results.items()} == {
        "square_2": 4,
        "square_3": 9,
        "square_2_child": 16,
        "square_3_child": 81,
    }
    assert list(results).index(parents[2]) < list(results).index(children[2])
    assert all(not r.reused and r.stage == t.name for t, r in results.items())


def test_each_needed_task_runs_once_needed_tasks_first(tmp_path):
    parent = Square(str(tmp_path), 2)
    a, b = Square(str(tmp_path), 2, parent=parent), Square(str(tmp_path), 5, parent=parent)
    assert with_needs([a, b]) == [parent, a, b]


def test_the_costliest_ready_task_starts_first(tmp_path):
    tasks = [Square(str(tmp_path), x, weight=w) for x, w in ((1, 1.0), (2, 3.0), (3, 2.0))]
    with Workers(1) as workers:
        results = workers.run(tasks, desc="test", progress=False)
    assert [t.x for t in results] == [2, 3, 1]


def test_a_finished_stage_is_reused_and_each_stage_prints_its_line(tmp_path, capsys):
    task = Square(str(tmp_path), 4, parent=Square(str(tmp_path), 2))
    with Workers(1) as workers:
        first = workers.run([task], desc="test")
    first_err = capsys.readouterr().err
    (task.folder() / "computed").unlink()
    with Workers(1) as workers:
        again = workers.run(
            [Square(str(tmp_path), 4, parent=Square(str(tmp_path), 2))], desc="test"
        )
    again_err = capsys.readouterr().err
    assert [r.value for r in first.values()] == [r.value for r in again.values()] == [4, 16]
    assert all(r.reused for r in again.values()) and not (task.folder() / "computed").exists()
    assert re.search(
        r"stage square_2: computed in \d+\.\d s\n.*stage square_4_child: computed in",
        first_err,
        re.S,
    )
    assert "stage square_4_child: reused (computed earlier in" in again_err
    assert re.search(
        r"test 2/2 stages: 100%\|.*\| \[", first_err
    )  # the overall bar, with its estimate
    with Workers(1) as workers:
        workers.run([task], desc="test", progress=False)
    assert capsys.readouterr().err == ""


def test_a_result_of_an_older_layout_is_computed_again(tmp_path, capsys):
    task = Square(str(tmp_path), 3)
    task.folder().mkdir(parents=True)
    (task.folder() / "result.json").write_text('{"stage_seconds": 1.0}')  # written before `value`
    result, _ = task.run()
    assert (result.value, result.reused) == (9, False) and (task.folder() / "computed").exists()
    assert capsys.readouterr().err == (
        f"stage square_3: {task.folder() / 'result.json'} is not a Number of this emlab (value:"
        " Field required); computing it again\n"
    )
    assert task.run()[0].reused  # the new result.json is read back


@pytest.mark.parametrize("n", [1, 2])
def test_a_follower_takes_over_what_its_task_kept_in_memory_when_computed_with_it(tmp_path, n):
    root = str(tmp_path)
    parent = Square(root, 3)
    late = Square(root, 5, weight=0.5)  # starts after `parent`: its follower cannot go along
    followers = [
        Follower(root, parent, 1),
        Follower(root, parent, 2),
        Follower(root, parent, 3, late),
    ]
    with Workers(n) as workers:
        results = workers.run(followers, desc="test", progress=False)
    assert [results[f].kept for f in followers] == ["square_3 in memory"] * 2 + [None]
    assert all(not r.reused for r in results.values())
    again = [Follower(root, Square(root, 3), 1), Follower(root, Square(root, 3), 4)]
    with Workers(n) as workers:
        results = workers.run(again, desc="test", progress=False)
    # reused stages keep nothing: a new follower of a reused task is computed without it
    assert [(results[f].reused, results[f].kept) for f in again] == [
        (True, "square_3 in memory"),
        (False, None),
    ]


@dataclass(frozen=True, eq=False)
class Slow(Square):
    """A Square that takes `seconds`."""

    seconds: float = 0.0

    def compute(self, folder: Path, parent: Number | None = None) -> Number:
        time.sleep(self.seconds)
        return super().compute(folder, parent)


def bar_states(err: str) -> list[tuple[str, str, str]]:
    """(stages done, percentage, time left) of each drawing of the overall bar 'test'."""
    return re.findall(r"test (\d/\d) stages: +(\d+)%\|[^|]*\| \[[\d:]+<([\d:?]+)\]", err)


def test_the_bar_counts_each_stage_by_its_cost_and_reused_stages_leave_the_total(tmp_path, capsys):
    root = str(tmp_path)
    with Workers(1) as workers:  # 2 s of cost 9, then an instant stage of cost 1
        workers.run([Slow(root, 1, weight=9, seconds=2.0), Slow(root, 2, weight=1)], desc="test")
    # after the first stage: 90% done and ~0.2 s left (counting stages: 50% and >= 2 s)
    assert ("1/2", "90", "00:00") in bar_states(capsys.readouterr().err)
    with Workers(1) as workers:  # the first is reused: only the second's cost is left to spend
        workers.run([Slow(root, 1, weight=9), Slow(root, 3, weight=1)], desc="test")
    states = bar_states(capsys.readouterr().err)
    assert ("1/2", "0", "?") in states and states[-1][:2] == ("2/2", "100")
    with Workers(1) as workers:  # every stage reused
        workers.run([Slow(root, 1, weight=9)], desc="test")
    assert bar_states(capsys.readouterr().err)[-1][:2] == ("1/1", "100")
    with Workers(1) as workers, pytest.raises(ValueError, match="finite and positive"):
        workers.run([Slow(root, 4, weight=float("inf"))], desc="test")


def test_a_failing_task_stops_the_run(tmp_path):
    with Workers(2) as workers, pytest.raises(TypeError):
        workers.run([Square(str(tmp_path), "x")], desc="test", progress=False)  # type: ignore[arg-type]
