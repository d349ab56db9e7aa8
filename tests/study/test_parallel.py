"""The study's task runner: dependent tasks start once their parents are done, costly ones first."""

from __future__ import annotations

import pytest

from emlab.study.parallel import Task, Workers


def square(x: int) -> dict:
    return {"value": x * x}


@pytest.mark.parametrize("n", [1, 2])
def test_children_run_after_their_parents_with_the_parents_results(n):
    finished = []

    def then(task: Task, result: dict) -> list[Task]:
        finished.append((task.key, result["value"]))
        if task.key[0] == "parent":  # a child squares its parent's result
            return [Task(("child", task.key[1]), square, (result["value"],))]
        return []

    with Workers(n) as workers:
        workers.run([Task(("parent", x), square, (x,)) for x in (2, 3)], then, total=4, desc="test")
    results = dict(finished)
    assert results == {("parent", 2): 4, ("parent", 3): 9, ("child", 2): 16, ("child", 3): 81}
    for x in (2, 3):
        assert finished.index((("parent", x), x * x)) < finished.index((("child", x), x**4))


def test_the_costliest_ready_task_starts_first():
    order = []
    tasks = [Task(k, square, (1,), cost=c) for k, c in (("cheap", 1.0), ("dear", 3.0), ("middle", 2.0))]
    with Workers(1) as workers:
        workers.run(tasks, lambda task, _: order.append(task.key) or [], total=3, desc="test")
    assert order == ["dear", "middle", "cheap"]


def test_a_failing_task_stops_the_run():
    with Workers(2) as workers, pytest.raises(TypeError):
        workers.run([Task("bad", square, ("x",))], lambda *_: [], total=1, desc="test")
