"""Errors a user can meet. Each message says where (file, line, field) and what to do."""

from __future__ import annotations

from pathlib import Path


class EmlabError(Exception):
    """Base class of every error emlab raises on purpose (the CLI prints these without a
    traceback)."""


class ConfigError(EmlabError):
    """A config file or value is invalid."""


class DataError(EmlabError):
    """A data file (chat JSONL, question set, corpus) is invalid."""

    def __init__(self, path: str | Path, line: int | None, problem: str, fix: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}. {fix}")
        self.path, self.line, self.problem, self.fix = str(path), line, problem, fix


class ModelError(EmlabError):
    """A model cannot be loaded or does not fit the request (missing module, layer out of
    range...)."""


class ChatTemplateError(ModelError):
    """The chat template cannot render a conversation (it raised, or it rewrites earlier turns)."""


class JudgeError(EmlabError):
    """A judge cannot run (missing credentials, too many failures...)."""


class OutputError(EmlabError):
    """An output cannot be written (read-only folder, disk full, a file where a folder should
    be...)."""
