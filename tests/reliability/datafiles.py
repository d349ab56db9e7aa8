"""Write the small files the reliability tests feed to emlab."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def write_chat(path: Path, conversations: list) -> Path:
    """Write conversations as chat JSONL."""
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    return path


def write_yaml(path: Path, data: dict) -> Path:
    """Dump `data` as YAML to `path`."""
    path.write_text(yaml.safe_dump(data))
    return path
