"""Crash-safe file writes: atomic replace, and append-only JSONL with a tolerant reader.

A write that fails (read-only folder, full disk, a file where a folder should be) raises an
OutputError naming the path and what to do; the file it would have replaced is untouched.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emlab.errors import OutputError

_ADVICE = {
    errno.ENOSPC: "The disk is full: free space or choose an output folder on another disk",
    errno.EDQUOT: (
        "The disk quota is exceeded: free space or choose an output folder on another disk"
    ),
    errno.EROFS: "The file system is read-only: choose a writable output folder",
    errno.EACCES: "Permission denied: make the folder writable or choose another output folder",
    errno.EPERM: "Permission denied: make the folder writable or choose another output folder",
    errno.ENOTDIR: (
        "A file stands where a folder is needed: move it or choose another output folder"
    ),
    errno.EEXIST: "A file stands where a folder is needed: move it or choose another output folder",
}


@contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into an OutputError that says what to do."""
    try:
        yield
    except OSError as e:
        advice = _ADVICE.get(
            e.errno, "Check that the output folder is writable and the disk has space"
        )
        raise OutputError(
            f"cannot write {path}: {e.strerror or e}. {advice}; files written before are intact:"
            " fix this and rerun (resumable commands continue where they stopped)."
        ) from e


def ensure_dir(path: str | Path) -> Path:
    """Create the folder `path` (and its parents) if needed; an OutputError says why not."""
    path = Path(path)
    with output_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it takes the place of `path`.

    An existing folder `path` (e.g. the solution of a run interrupted before it finished) is
    replaced: renamed aside, the new folder renamed in, the old one deleted (a crash between the
    two renames leaves it as `.<name>.*.old`). On failure the temporary folder is deleted and
    `path` is untouched.
    """
    path = Path(path)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _beside(path, "tmp")
        tmp.mkdir()
        try:
            yield tmp
            if path.is_dir():  # rename() cannot replace a non-empty folder
                aside = _beside(path, "old")
                os.replace(path, aside)
                os.replace(tmp, path)
                shutil.rmtree(aside)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _beside(path: Path, suffix: str) -> Path:
    """An unused hidden name next to `path`: `.<name>.<random>.<suffix>`."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.{suffix}")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (readers see the old file or the new one, never half)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented, standard JSON to `path` atomically (NaN and infinities become
    null)."""
    write_text_atomic(
        path, json.dumps(finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    )


def finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def append_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows to a JSONL file and fsync, so a killed process loses at most a torn last line."""
    path = Path(path)
    payload = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
    if not payload:
        return
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            if f.tell() > 0 and not _ends_with_newline(path):
                f.write("\n")  # seal a torn last line left by a killed writer
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file written by `append_jsonl`, skipping torn (unparseable) lines."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from an interrupted append
    return rows


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
