"""The study package's layout: the world and model studies share only study.common, and the
study's entry points leave transformers' logging as they found it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import emlab.study

STUDY = Path(emlab.study.__file__).parent


def imported_modules(package: str) -> set[str]:
    """Every emlab module that the files of `emlab.study.<package>` import."""
    out = set()
    for path in (STUDY / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                out.add(node.module)
            elif isinstance(node, ast.Import):
                out |= {alias.name for alias in node.names}
    return {m for m in out if m.startswith("emlab.study")}


@pytest.mark.parametrize(
    ("package", "others"),
    [("world", ("model",)), ("model", ("world",)), ("common", ("world", "model"))],
)
def test_a_study_imports_only_itself_and_common(package, others):
    imported = imported_modules(package)
    assert imported  # the scan sees the imports
    assert not [m for m in imported if m.split(".")[2] in others], imported
    assert {m.split(".")[2] for m in imported} <= {package, "common"}


def test_quiet_transformers_restores_the_logging_state():
    from transformers.utils import logging

    from emlab.study.common.logs import quiet_transformers

    before = logging.get_verbosity()
    logging.set_verbosity_info()
    logging.enable_progress_bar()
    try:
        with quiet_transformers():
            assert (
                logging.get_verbosity() == logging.ERROR and not logging.is_progress_bar_enabled()
            )
        assert logging.get_verbosity() == logging.INFO and logging.is_progress_bar_enabled()
    finally:
        logging.set_verbosity(before)
