"""Cached study stages: a stage reruns only when its key (config hash) changes or it never finished."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from emlab.config import config_hash
from emlab.io import ensure_dir, write_json_atomic

RESULT = "result.json"


def report_stage(result: dict[str, Any]) -> None:
    """Print one line on stderr for a finished stage (a result of Stages.run): its name, and the
    seconds it took now (computed) or when it was computed (reused)."""
    seconds = result.get("stage_seconds", 0.0)  # older stage results lack it
    how = f"reused (computed earlier in {seconds:.1f} s)" if result["reused"] else f"computed in {seconds:.1f} s"
    tqdm.write(f"stage {result['stage']}: {how}", file=sys.stderr)


class Stages:
    """Stage folders `root/<name>-<hash of key>/` holding `result.json` once the stage is done;
    with `report`, each finished stage prints its line (report_stage)."""

    def __init__(self, root: str | Path, report: bool = False) -> None:
        self.root = ensure_dir(root)
        self.report = report

    def folder(self, name: str, key: Any) -> Path:
        """Where the stage `name` with this key keeps its outputs."""
        return self.root / f"{name}-{config_hash(key)}"

    def run(self, name: str, key: Any, fn: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Return the stage's result, computing `fn(folder)` first unless it is already done.

        The result carries `stage_seconds` (time it took when computed), `reused` (loaded
        from an earlier run) and `stage` (the name). An interrupted stage leaves no result.json
        and is run again (its own steps resume from what they left in the folder)."""
        folder = self.folder(name, key)
        if (folder / RESULT).exists():
            result = {**json.loads((folder / RESULT).read_text()), "reused": True, "stage": name}
        else:
            ensure_dir(folder)
            start = time.time()
            computed = {**fn(folder), "stage_seconds": time.time() - start}
            write_json_atomic(folder / RESULT, computed)
            result = {**computed, "reused": False, "stage": name}
        if self.report:
            report_stage(result)
        return result
