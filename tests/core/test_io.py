"""Crash-safe files: atomic JSON (standard, no NaN) and JSONL that survives a torn last line."""

from __future__ import annotations

import json
import math

import pytest

from emlab.io import append_jsonl, atomic_dir, read_jsonl, write_json_atomic


def test_json_is_standard(tmp_path):
    write_json_atomic(
        tmp_path / "r.json", {"a": [1.0, math.nan], "b": {"c": math.inf}, "d": (2, 3)}
    )
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": [1.0, None], "b": {"c": None}, "d": [2, 3]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_torn_last_line_is_skipped_then_sealed(tmp_path):
    path = tmp_path / "rows.jsonl"
    append_jsonl(path, [{"i": 0}, {"i": 1}])
    with open(path, "a") as f:
        f.write('{"i": 2, "tor')  # a writer killed mid-line
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]
    append_jsonl(path, [{"i": 3}])
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 3}]


def test_atomic_dir_replaces_an_existing_folder_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "solution"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target) as tmp:  # over a folder already there (a rename alone cannot)
        (tmp / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"]
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
        raise RuntimeError("killed while writing")
    assert [p.name for p in target.iterdir()] == ["b"]  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["solution"]  # no temporary or set-aside folder
