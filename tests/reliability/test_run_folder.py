"""A training run's folder through the CLI: rerunning a finished `emlab train` is a no-op, and
its held-out split (heldout.jsonl) is what `emlab analyze` uses when --data is not given."""

from __future__ import annotations

import json
from pathlib import Path

from datafiles import write_yaml
from typer.testing import CliRunner

from emlab.cli import app
from emlab.config import validate_config
from emlab.data.chat import read_chat_jsonl
from emlab.runs import run_path
from emlab.train.config import TrainConfig


def _files(folder: Path) -> dict:
    """Every file and folder under `folder` (hidden ones included), with the bytes of the files."""
    return {
        p.relative_to(folder): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def _line(output: str, start: str) -> str:
    """The line of `output` that begins with `start` (after any progress bar's carriage returns)."""
    return start + output.split(start, 1)[1].splitlines()[0]


def _train(config: dict, tmp_path: Path):
    path = write_yaml(tmp_path / "config.yaml", config)
    return CliRunner().invoke(app, ["train", str(path)]), run_path(
        config["output_dir"], config["name"], validate_config(config, TrainConfig)
    )


def test_rerunning_a_finished_train_is_a_no_op_that_says_where_the_solution_is(
    train_setup, tmp_path
):
    first, run = _train(train_setup, tmp_path)
    assert first.exit_code == 0, first.output
    before = _files(tmp_path)
    again, _ = _train(train_setup, tmp_path)
    assert again.exit_code == 0, (again.output, again.exception)
    solution = _line(first.output, "solution: ")
    assert solution.startswith(f"solution: {run / 'solution'} (norm ")
    assert (
        _line(again.output, "already trained: ")
        == f"already trained: {run} has its DONE marker; nothing was trained or written"
    )
    assert (
        _line(again.output, "solution: ") == solution
    )  # the same solution and norm as the first time
    assert _files(tmp_path) == before  # manifest.json byte for byte, no .solution.*.tmp folder


def test_train_writes_its_held_out_split_and_analyze_uses_it_by_default(
    train_setup, model_dir, toy_data, tmp_path
):
    config = {**train_setup, "data": {**train_setup["data"], "heldout_fraction": 0.25}}
    trained, run = _train(config, tmp_path)
    assert trained.exit_code == 0, trained.output
    heldout = read_chat_jsonl(run / "heldout.jsonl")
    assert len(heldout) == 16  # round(0.25 * 64)
    assert all(c in toy_data[0] for c in heldout)
    assert (
        json.loads((run / "manifest.json").read_text())["data"]["train"]["conversations"] == 48
    )  # the other 48
    common = ["--model", str(model_dir), "--device", "cpu", "--points", "3", "--limit", "8"]
    runner = CliRunner()
    default = runner.invoke(
        app,
        [
            "analyze",
            "efficiency",
            str(run / "solution"),
            "--out",
            str(tmp_path / "default"),
            *common,
        ],
    )
    assert default.exit_code == 0, (default.output, default.exception)
    assert f"data: {run / 'heldout.jsonl'} (held-out split of the run)" in default.output
    given = runner.invoke(
        app,
        [
            "analyze",
            "efficiency",
            str(run / "solution"),
            "--data",
            str(run / "heldout.jsonl"),
            "--out",
            str(tmp_path / "given"),
            *common,
        ],
    )
    assert given.exit_code == 0, given.output
    assert (tmp_path / "default" / "efficiency.json").read_text() == (
        tmp_path / "given" / "efficiency.json"
    ).read_text()
    # a solution outside a run folder, without --data: an error that says what to pass
    elsewhere = tmp_path / "copied"
    elsewhere.mkdir()
    (run / "solution").rename(elsewhere / "narrow")
    lost = runner.invoke(
        app,
        ["analyze", "efficiency", str(elsewhere / "narrow"), "--out", str(tmp_path / "x"), *common],
    )
    assert lost.exit_code == 2, lost.output
    assert "error: no --data given" in lost.output and "pass --data" in lost.output
