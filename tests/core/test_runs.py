"""Run directories: manifests record what reproduces a run and never a secret."""

from __future__ import annotations

import json

from emlab.runs import RunDir, redacted_argv
from emlab.train.config import TrainConfig


def test_secret_options_are_redacted():
    argv = ["emlab", "judge", "--api-key", "sk-123", "--openai-token=sk-456", "--out", "x"]
    assert redacted_argv(argv) == [
        "emlab",
        "judge",
        "--api-key",
        "***",
        "--openai-token=***",
        "--out",
        "x",
    ]


def test_manifest_has_config_versions_and_timings(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-secret")
    monkeypatch.setattr("sys.argv", ["emlab", "train", "cfg.yaml", "--api-key=sk-planted-secret"])
    cfg = TrainConfig(output_dir=str(tmp_path), seed=7)
    run = RunDir(tmp_path, "t", cfg)
    run.time_stage("train", 1.5)
    text = (run.path / "manifest.json").read_text()
    manifest = json.loads(text)
    assert run.path.name == f"t-{cfg.hash()}"
    assert manifest["config"]["seed"] == 7
    assert {"torch", "transformers", "peft"} <= set(manifest["versions"])
    assert manifest["timings"]["train"] == 1.5
    assert "sk-planted-secret" not in text
