"""Run directories and their manifests (config, versions, git SHA, seeds, command, timings)."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from emlab.config import EmlabConfig
from emlab.io import ensure_dir, write_json_atomic

DONE = "DONE"
"""Written last into a finished training run's folder (its text: the number of steps)."""
HELDOUT = "heldout.jsonl"
"""A training run's held-out conversations (chat JSONL), beside its `solution/` folder."""

_LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "pydantic",
    "tokenizers",
    "openai",
    "vllm",
)
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def library_versions() -> dict[str, str]:
    """Installed versions of emlab and the libraries that shape its numbers."""
    out = {}
    for name in ("emlab", *_LIBRARIES):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_sha() -> str | None:
    """The git commit of the emlab source tree, with '-dirty' if it has local changes."""
    src = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def redacted_argv(argv: list[str] | None = None) -> list[str]:
    """The command line, with the value after any secret-looking option replaced."""
    argv = list(sys.argv if argv is None else argv)
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name = arg.split("=", 1)[0].upper()
        secret = any(m in name for m in _SECRET_MARKERS) and name.startswith("-")
        if secret and "=" in arg:
            out.append(arg.split("=", 1)[0] + "=***")
        else:
            out.append(arg)
            hide_next = secret
    return out


def run_path(root: str | Path, name: str, config: EmlabConfig) -> Path:
    """`root/<name>-<config hash>`: where a run with this config writes."""
    return Path(root) / f"{name}-{config.hash()}"


class RunDir:
    """A run's output folder: `root/<name>-<config hash>/` with `manifest.json` kept up to date."""

    def __init__(self, root: str | Path, name: str, config: EmlabConfig) -> None:
        self.config = config
        self.path = run_path(root, name, config)
        ensure_dir(self.path)
        self._start = time.time()
        self.manifest: dict[str, Any] = {
            "name": name,
            "config_hash": config.hash(),
            "config": config.model_dump(mode="json"),
            "versions": library_versions(),
            "git_sha": git_sha(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "command": redacted_argv(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "timings": {},
        }
        self.write_manifest()

    def record(self, **fields: Any) -> None:
        """Add fields (seeds, results paths...) to the manifest and rewrite it."""
        self.manifest.update(fields)
        self.write_manifest()

    def time_stage(self, stage: str, seconds: float) -> None:
        """Record the wall time of a stage."""
        self.manifest["timings"][stage] = round(seconds, 3)
        self.manifest["timings"]["total"] = round(time.time() - self._start, 3)
        self.write_manifest()

    def write_manifest(self) -> None:
        write_json_atomic(self.path / "manifest.json", self.manifest)
