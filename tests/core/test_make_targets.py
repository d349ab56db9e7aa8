"""`make test` and `make test-system` split the default selection between them, CI runs both,
and every `make` target the README names exists."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKERS = ("slow", "system", "gpu", "api")


def _selection(target: str) -> str:
    """The `-m` expression of a Makefile target's pytest line."""
    recipe = re.search(
        rf"^{target}:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M
    ).group(1)
    return re.search(r'-m "([^"]+)"', recipe).group(1)


def _selects(expression: str, marks: dict[str, bool]) -> bool:
    # the Makefile's own marker expressions: `not`, `and`, `or` over marker names
    return eval(expression, {"__builtins__": {}}, marks)  # noqa: S307


def test_fast_and_system_suites_split_what_ci_ran_before():
    fast, system = _selection("test"), _selection("test-system")
    for values in itertools.product([False, True], repeat=len(MARKERS)):
        marks = dict(zip(MARKERS, values, strict=True))
        before = not marks["slow"] and not marks["gpu"] and not marks["api"]
        assert (_selects(fast, marks), _selects(system, marks)) == (
            before and not marks["system"],
            before and marks["system"],
        )
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "make test" in ci and "make test-system" in ci


def test_readme_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    named = set(re.findall(r"(?:^|`)make ([\w-]+)", (REPO / "README.md").read_text(), re.M))
    assert {"test", "test-system", "run"} <= named and named <= targets, named - targets
