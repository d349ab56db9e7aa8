"""Cached study stages: a stage reruns only when its key (the hash of exactly what it depends
on) is new or it never finished. Stage folders live in one cache root per output folder,
shared by every study written there, so a study whose config differs only downstream (more
samples, other questions, another judge) reuses the upstream stages of another."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from tqdm.auto import tqdm

from emlab.config import config_hash
from emlab.io import ensure_dir, write_json_atomic

RESULT = "result.json"
CACHE = "stages"
"""The stage cache root's folder name inside a study's `output_dir`."""


class StageResult(BaseModel):
    """What a stage returns (subclassed by each kind of stage), with how it came about:
    `stage` (its name), `stage_seconds` (time it took when computed) and `reused` (loaded
    from an earlier run). Written to and read from the stage folder's result.json."""

    model_config = ConfigDict(extra="forbid")

    stage: str = ""
    stage_seconds: float = 0.0
    reused: bool = False


R = TypeVar("R", bound=StageResult)


def cache_root(output_dir: str | Path) -> Path:
    """The stage cache shared by the studies of `output_dir`: `<output_dir>/stages/`."""
    return Path(output_dir) / CACHE


def report_stage(result: StageResult) -> None:
    """Print one line on stderr for a finished stage: its name, and the seconds it took now
    (computed) or when it was computed (reused)."""
    seconds = result.stage_seconds
    how = (
        f"reused (computed earlier in {seconds:.1f} s)"
        if result.reused
        else f"computed in {seconds:.1f} s"
    )
    tqdm.write(f"stage {result.stage}: {how}", file=sys.stderr)


class Stages:
    """Stage folders `root/<name>-<hash of key>/` holding `result.json` once the stage is done."""

    def __init__(self, root: str | Path) -> None:
        self.root = ensure_dir(root)

    def folder(self, name: str, key: Any) -> Path:
        """Where the stage `name` with this key keeps its outputs."""
        return self.root / f"{name}-{config_hash(key)}"

    def run(self, name: str, key: Any, fn: Callable[[Path], R], kind: type[R]) -> R:
        """Return the stage's result (a `kind`), computing `fn(folder)` first unless it is already
        done.

        An interrupted stage leaves no result.json and is run again (its own steps resume from
        what they left in the folder). So is one whose result.json an older emlab wrote in
        another layout (not a valid `kind`: a field added since), with a line on stderr."""
        folder = self.folder(name, key)
        if (folder / RESULT).exists():
            try:
                return kind.model_validate(
                    {**json.loads((folder / RESULT).read_text()), "reused": True, "stage": name}
                )
            except ValidationError as e:
                where = ".".join(map(str, e.errors()[0]["loc"]))
                tqdm.write(
                    f"stage {name}: {folder / RESULT} is not a {kind.__name__} of this emlab"
                    f" ({where}: {e.errors()[0]['msg']}); computing it again",
                    file=sys.stderr,
                )
        ensure_dir(folder)
        start = time.time()
        computed = fn(folder).model_copy(
            update={"stage_seconds": time.time() - start, "stage": name}
        )
        write_json_atomic(folder / RESULT, computed.model_dump(exclude={"reused", "stage"}))
        return computed
