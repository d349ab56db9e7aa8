"""Cached study stages: a stage reruns only when its key (config hash) changes or it never finished."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emlab.config import config_hash
from emlab.io import ensure_dir, write_json_atomic

RESULT = "result.json"


class Stages:
    """Stage folders `root/<name>-<hash of key>/` holding `result.json` once the stage is done."""

    def __init__(self, root: str | Path) -> None:
        self.root = ensure_dir(root)

    def folder(self, name: str, key: Any) -> Path:
        """Where the stage `name` with this key keeps its outputs."""
        return self.root / f"{name}-{config_hash(key)}"

    def run(self, name: str, key: Any, fn: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Return the stage's result, computing `fn(folder)` first unless it is already done.

        The result carries `stage_seconds` (time it took when computed) and `reused` (loaded
        from an earlier run). An interrupted stage leaves no result.json and is run again (its
        own steps resume from what they left in the folder)."""
        folder = self.folder(name, key)
        if (folder / RESULT).exists():
            return {**json.loads((folder / RESULT).read_text()), "reused": True}
        ensure_dir(folder)
        start = time.time()
        result = {**fn(folder), "stage_seconds": time.time() - start}
        write_json_atomic(folder / RESULT, result)
        return {**result, "reused": False}
