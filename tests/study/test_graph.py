"""The studies' task graph: a task starts once the tasks it needs are done, with their
results; costly ones first; each stage is cached by its key and reported as it finishes."""

from __future__ import annotations

import re
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
    assert re.search(r"test: 100%.*\| 2/2 \[", first_err)  # the overall bar, with its time estimate
    with Workers(1) as workers:
        workers.run([task], desc="test", progress=False)
    assert capsys.readouterr().err == ""


def test_a_failing_task_stops_the_run(tmp_path):
    with Workers(2) as workers, pytest.raises(TypeError):
        workers.run([Square(str(tmp_path), "x")], desc="test", progress=False)  # type: ignore[arg-type]
