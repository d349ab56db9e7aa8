"""Resources: an output folder that cannot be written, a full disk, out-of-memory batches.

Each ends with an error that says what happened and what to do (no traceback from the CLI),
and no earlier result is damaged: a rerun after the fix resumes and ends as a clean run would.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import accelerate
import pytest
import torch
from datafiles import write_yaml
from safetensors.torch import load_file
from tiny_prompts import make_prompts
from typer.testing import CliRunner

import emlab.generate.hf as hf
from emlab.cli import app
from emlab.config import validate_config
from emlab.errors import EmlabError, OutputError
from emlab.generate.sampling import SamplingConfig
from emlab.io import read_jsonl
from emlab.runs import run_path
from emlab.train.config import TrainConfig
from emlab.train.loop import train

JUDGMENTS = [
    {
        "item_id": f"s{i}",
        "question_id": f"q{i % 3}",
        "metric": metric,
        "score": score,
        "reason": None,
        "judge": "j",
    }
    for i, (aligned, coherent) in enumerate([(10, 90), (80, 90), (20, 40), (90, 95)] * 3)
    for metric, score in (("aligned", aligned), ("coherent", coherent))
]


@pytest.fixture
def judgments(tmp_path) -> Path:
    path = tmp_path / "judgments.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in JUDGMENTS))
    return path


def _unwritable(kind: str, tmp_path: Path) -> Path:
    """A folder path where emlab cannot write, of the given kind (skips where impossible)."""
    if kind == "read-only-folder":
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        try:
            (folder / "probe").touch()
        except PermissionError:
            return folder
        (folder / "probe").unlink()
        pytest.skip(
            "running as root: permission bits do not bind; the other two kinds cover unwritable"
            " outputs"
        )
    if kind == "file-in-the-way":
        (tmp_path / "results").write_text("a file where the output folder should be\n")
        return tmp_path / "results" / "out"
    try:  # sysfs accepts no new entries, not even from root
        os.mkdir("/sys/emlab-write-probe")
    except OSError:
        return Path("/sys/emlab-output")
    os.rmdir("/sys/emlab-write-probe")
    pytest.skip("/sys is writable here")


@pytest.mark.parametrize("kind", ["read-only-folder", "file-in-the-way", "read-only-filesystem"])
def test_unwritable_output_folder_gives_a_clear_error(kind, tmp_path, judgments, train_setup):
    out = _unwritable(kind, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    score = CliRunner().invoke(
        app, ["score", str(judgments), "--out-dir", str(out / "scores"), "--no-figures"]
    )
    config = write_yaml(tmp_path / "train.yaml", {**train_setup, "output_dir": str(out / "runs")})
    trained = CliRunner().invoke(app, ["train", str(config)])
    for result in (score, trained):
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        message = result.output[result.output.index("error: ") :]
        assert f"cannot write {out}" in message and (
            "writable" in message or "folder is needed" in message
        ), message
    assert {p: p.read_bytes() for p in before} == before  # nothing changed


def test_full_disk_keeps_the_previous_results(tmp_path, judgments, monkeypatch):
    out = tmp_path / "scores"
    first = CliRunner().invoke(
        app, ["score", str(judgments), "--out-dir", str(out), "--no-figures"]
    )
    assert first.exit_code == 0, first.output
    summary = (out / "summary.json").read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    again = CliRunner().invoke(
        app,
        [
            "score",
            str(judgments),
            "--out-dir",
            str(out),
            "--no-figures",
            "--aligned-threshold",
            "90",
        ],
    )
    assert again.exit_code == 2 and isinstance(again.exception, SystemExit), again.output
    assert (
        "cannot write" in again.output
        and "disk is full" in again.output
        and "summary.json" in again.output
    )
    assert (out / "summary.json").read_bytes() == summary  # the previous summary, whole
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.parquet",
        "per_question.parquet",
        "summary.json",
    ]  # no temporary file


def test_disk_full_mid_training_then_rerun_matches_a_clean_run(train_setup, tmp_path, monkeypatch):
    base = {**train_setup, "max_steps": 8, "checkpoint_every": 2}
    clean = validate_config({**base, "output_dir": str(tmp_path / "clean")}, TrainConfig)
    full = validate_config({**base, "output_dir": str(tmp_path / "full")}, TrainConfig)
    train(clean)

    real_fsync, calls = os.fsync, []

    def fills_up(
        fd: int,
    ) -> None:  # the 6th durable write (a metrics row at step 5) finds the disk full
        calls.append(fd)
        if len(calls) >= 6:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_up)
    with pytest.raises(OutputError, match="disk is full"):
        train(full)
    monkeypatch.setattr(os, "fsync", real_fsync)
    run = run_path(full.output_dir, full.name, full)
    train(full)  # resumes from the step-4 checkpoint

    reference = run_path(clean.output_dir, clean.name, clean)
    want, got = (load_file(r / "solution" / "tensors.safetensors") for r in (reference, run))
    assert all((want[k] == got[k]).all() for k in want)
    assert json.loads((run / "manifest.json").read_text())["resumed_from"] == 4
    losses = [
        [(r["step"], r["loss"]) for r in read_jsonl(r / "metrics.jsonl")] for r in (reference, run)
    ]
    assert losses[1] == losses[0]  # each step once, same losses


def _out_of_memory(*args: object, **kwargs: object) -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_out_of_memory_in_training_suggests_a_smaller_batch(
    where, train_setup, tmp_path, monkeypatch
):
    if where == "forward":
        from transformers import Qwen2ForCausalLM

        monkeypatch.setattr(Qwen2ForCausalLM, "forward", _out_of_memory)
    else:
        monkeypatch.setattr(accelerate.Accelerator, "backward", _out_of_memory)
    config = write_yaml(tmp_path / "train.yaml", {**train_setup, "batch_size": 8, "grad_accum": 2})
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert (
        "error: out of memory at batch_size 8: try batch_size 4 with grad_accum 4 (same effective"
        " batch)" in result.output
    )


def test_out_of_memory_in_generation_suggests_a_smaller_batch_and_keeps_answers(
    tiny_model, tiny_tokenizer, tmp_path, monkeypatch
):
    real, calls = hf._generate_batch, []

    def second_batch_fails(*args: object, **kwargs: object) -> list[dict]:
        calls.append(1)
        if len(calls) == 2:
            _out_of_memory()
        return real(*args, **kwargs)

    monkeypatch.setattr(hf, "_generate_batch", second_batch_fails)
    out = tmp_path / "generations.jsonl"
    sampling = SamplingConfig(max_new_tokens=4, batch_size=3)
    with pytest.raises(
        EmlabError,
        match=(
            r"out of memory generating a batch of 3: try batch_size \(--batch-size\) 1.*the 3"
            r" answers"
        ),
    ):
        hf.generate_hf(tiny_model, tiny_tokenizer, make_prompts(), out, sampling, progress=False)
    assert len(read_jsonl(out)) == 3
    monkeypatch.setattr(hf, "_generate_batch", real)
    summary = hf.generate_hf(
        tiny_model,
        tiny_tokenizer,
        make_prompts(),
        out,
        sampling.model_copy(update={"batch_size": 1}),
        progress=False,
    )
    assert summary.existing == 3 and len(read_jsonl(out)) == summary.total
