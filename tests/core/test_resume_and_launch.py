"""Interrupted runs resume exactly; `accelerate launch` with 2 processes matches 1 process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from emlab.io import read_jsonl


def _write_setup(tmp_path: Path, tiny_model, tiny_tokenizer, toy_data, **cfg_extra) -> dict:
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    for name, convs in zip(("train", "ood"), toy_data, strict=True):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for c in convs:
                f.write(json.dumps({"messages": c}) + "\n")
    cfg = {
        "name": "resume",
        "model": {"name_or_path": str(model_dir)},
        "data": {
            "train": str(tmp_path / "train.jsonl"),
            "ood": str(tmp_path / "ood.jsonl"),
            "heldout_fraction": 0.0,
        },
        "solution": {
            "kind": "lora",
            "r": 2,
            "alpha": 4.0,
            "target_modules": ["down_proj", "q_proj"],
        },
        "kl": {"weight": 1.0},
        "optim": {"lr": 3e-2, "warmup_steps": 3},
        "batch_size": 4,
        "progress": False,
        "seed": 3,
    }
    cfg.update(cfg_extra)
    return cfg


def _run_dir(out: Path) -> Path:
    (found,) = [p for p in out.iterdir() if p.is_dir()]
    return found


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.system
def test_sigkill_mid_training_then_resume_gives_identical_weights(
    tmp_path, tiny_model, tiny_tokenizer, toy_data
):
    base = _write_setup(
        tmp_path,
        tiny_model,
        tiny_tokenizer,
        toy_data,
        max_steps=300,
        checkpoint_every=20,
        grad_accum=2,
    )
    results = {}
    for label in ("straight", "killed"):
        cfg_path = tmp_path / f"{label}.yaml"
        cfg_path.write_text(yaml.safe_dump({**base, "output_dir": str(tmp_path / label)}))
        cmd = [sys.executable, "-m", "emlab", "train", str(cfg_path)]
        if label == "killed":
            proc = subprocess.Popen(
                cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.time() + 240
            while time.time() < deadline:
                rows = read_jsonl(
                    next((tmp_path / label).glob("*/metrics.jsonl"), Path("/nonexistent"))
                )
                if len(rows) >= 50:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            run = _run_dir(tmp_path / label)
            assert not (run / "DONE").exists(), "the run finished before it could be killed"
            assert list((run / "checkpoints").glob("step-*")), (
                "no checkpoint was written before the kill"
            )
        subprocess.run(cmd, env=_env(), check=True, capture_output=True)
        run = _run_dir(tmp_path / label)
        results[label] = (
            load_file(run / "solution" / "tensors.safetensors"),
            read_jsonl(run / "metrics.jsonl"),
        )
    straight_w, straight_m = results["straight"]
    killed_w, killed_m = results["killed"]
    assert set(straight_w) == set(killed_w)
    for name in straight_w:
        assert (straight_w[name] == killed_w[name]).all(), name  # bit-identical
    assert [r["step"] for r in killed_m] == list(range(1, 301))  # each step logged exactly once
    assert [r["loss"] for r in killed_m] == [r["loss"] for r in straight_m]


@pytest.mark.system
def test_accelerate_two_processes_match_one(tmp_path, tiny_model, tiny_tokenizer, toy_data):
    base = _write_setup(tmp_path, tiny_model, tiny_tokenizer, toy_data, max_steps=12)
    curves = {}
    for procs, batch in ((1, 8), (2, 4)):  # same global batch of 8
        cfg_path = tmp_path / f"p{procs}.yaml"
        cfg_path.write_text(
            yaml.safe_dump({**base, "batch_size": batch, "output_dir": str(tmp_path / f"p{procs}")})
        )
        # on CPUs, accelerate's multi-process launcher needs ACCELERATE_USE_CPU (gloo backend)
        launch = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(procs),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "29531",
        ]
        if procs == 1:
            launch.remove("--multi_gpu")
        env = {**_env(), "ACCELERATE_USE_CPU": "true"}
        subprocess.run(
            [*launch, "-m", "emlab", "train", str(cfg_path)],
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
        curves[procs] = [
            r["loss"] for r in read_jsonl(_run_dir(tmp_path / f"p{procs}") / "metrics.jsonl")
        ]
    assert len(curves[1]) == len(curves[2]) == 12
    # losses are token means over the global batch, so the curves agree up to float summation order
    for one, two in zip(curves[1], curves[2], strict=True):
        assert abs(one - two) <= 1e-3 * one, (curves[1], curves[2])
    assert curves[2][-1] < curves[2][0]
