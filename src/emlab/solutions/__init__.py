"""Solutions: parameter changes (LoRA, steering vector, full delta) with norm, scaling, noise."""

from __future__ import annotations

import json
from pathlib import Path

from emlab.errors import EmlabError
from emlab.solutions.base import Solution
from emlab.solutions.full import FullDelta
from emlab.solutions.lora import LoraSolution
from emlab.solutions.steering import SteeringSolution, SteeringVector

KINDS: dict[str, type[Solution]] = {c.kind: c for c in (LoraSolution, SteeringSolution, FullDelta)}


def load_solution(path: str | Path) -> Solution:
    """Load a solution saved with `Solution.save`."""
    path = Path(path)
    meta_file = path / Solution.META_FILE
    if not meta_file.is_file():
        raise EmlabError(
            f"{path}: not an emlab solution folder (no {Solution.META_FILE}). Point at a folder"
            " written by `emlab train`."
        )
    meta = json.loads(meta_file.read_text())
    cls = KINDS[meta.pop("kind")]
    return cls.from_saved(meta, cls._load_tensors(path))


__all__ = [
    "FullDelta",
    "LoraSolution",
    "Solution",
    "SteeringSolution",
    "SteeringVector",
    "load_solution",
]
