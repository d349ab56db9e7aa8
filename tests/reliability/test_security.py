"""Security: keys only from the environment and never written anywhere; no pickle, eval or remote
code on user data; weights load from safetensors."""

from __future__ import annotations

import ast
import json
import logging
import traceback
from pathlib import Path

import pytest
import torch
from datafiles import write_yaml
from fake_openai import FakeOpenAI
from safetensors.torch import save_file
from typer.testing import CliRunner

import emlab
import emlab.models.load as load
from emlab.cli import app
from emlab.errors import JudgeError, ModelError
from emlab.io import read_jsonl
from emlab.judge.base import JudgeItem
from emlab.judge.openai_judge import OpenAIJudge, OpenAIJudgeConfig
from emlab.models.config import ModelConfig
from emlab.train.checkpoint import load_checkpoint

SECRET = "sk-emlab-planted-9d1f0c7e4b2a"
KEY_VARS = ("OPENAI_API_KEY", "HF_TOKEN", "WANDB_API_KEY", "AZURE_OPENAI_API_KEY")


def _everything_written(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_planted_key_is_in_no_file_log_output_or_traceback(
    tmp_path, monkeypatch, caplog, train_setup
):
    for var in KEY_VARS:
        monkeypatch.setenv(var, SECRET)
    for var in (
        "HOME",
        "EMLAB_CACHE",
        "HF_HOME",
        "XDG_CACHE_HOME",
    ):  # every cache lands under tmp_path
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    caplog.set_level(logging.DEBUG)  # openai, httpx and emlab debug logs included
    gens = tmp_path / "generations.jsonl"
    gens.write_text(
        "".join(
            json.dumps(
                {
                    "sample_id": f"s{i}",
                    "question_id": "q",
                    "question": "Q?",
                    "answer": f"a{i} #{name}",
                }
            )
            + "\n"
            for i, name in enumerate(["ok", "ok", "echo", "flaky"])
        )
    )
    config = write_yaml(
        tmp_path / "judge.yaml", {"model": "fake", "max_failure_rate": 0.5, "backoff_initial": 0.01}
    )
    tries: dict[str, int] = {}

    def fault(n: int, name: str, body: dict) -> tuple | None:
        tries[name] = tries.get(name, 0) + 1
        if name == "echo":  # an error body quoting the request's Authorization header
            return ("status", 400, {}, "bad request from {auth}")
        return (
            ("status", 500, {}, "upstream {auth}") if name == "flaky" and tries[name] == 1 else None
        )

    outputs, tracebacks = [], []
    runner = CliRunner()
    with FakeOpenAI(
        {"ok": [("90", 0.0)], "echo": [("1", 0.0)], "flaky": [("50", 0.0)]}, fault
    ) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        out = tmp_path / "judgments.jsonl"
        outputs.append(
            runner.invoke(
                app, ["judge", str(gens), "--judge-config", str(config), "--out", str(out)]
            )
        )
        outputs.append(
            runner.invoke(
                app,
                [
                    "score",
                    str(out),
                    "--out-dir",
                    str(tmp_path / "scores"),
                    "--max-error-rate",
                    "0.5",
                ],
            )
        )
        assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
        assert any(
            "***" in (r["reason"] or "") for r in read_jsonl(out)
        )  # the echoed key was redacted
        assert SECRET in server.auth[0]  # the key did reach the server, from the environment
    with FakeOpenAI(
        {"ok": [("90", 0.0)]}, lambda n, name, body: ("status", 401, {}, "invalid key {auth}")
    ) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        rejected = runner.invoke(
            app,
            [
                "judge",
                str(gens),
                "--judge-config",
                str(config),
                "--out",
                str(tmp_path / "j401.jsonl"),
            ],
        )
        assert rejected.exit_code == 2 and "OPENAI_API_KEY" in rejected.output
        outputs.append(rejected)
        judge = OpenAIJudge(OpenAIJudgeConfig(model="fake", cache_dir=tmp_path / "lib-cache"))
        with pytest.raises(JudgeError) as raised:
            judge.judge([JudgeItem(item_id="x", question_id="q", question="Q?", answer="#ok")])
        tracebacks.append(
            "".join(traceback.format_exception(raised.value))
        )  # with its chained causes
    trained = runner.invoke(app, ["train", str(write_yaml(tmp_path / "train.yaml", train_setup))])
    assert trained.exit_code == 0, trained.output
    outputs.append(trained)

    written = _everything_written(tmp_path)
    assert any(p.name == "manifest.json" for p in written) and any(
        p.name == "judge_cache.jsonl" for p in written
    )
    for path, data in written.items():
        assert SECRET.encode() not in data, path
    for result in outputs:
        assert SECRET not in result.output
        if result.exc_info is not None:
            tracebacks.append("".join(traceback.format_exception(*result.exc_info)))
    assert SECRET not in "".join(tracebacks)
    assert SECRET not in caplog.text and caplog.records  # logs were captured, and hold no key


def _python_files() -> list[Path]:
    return sorted(Path(emlab.__file__).parent.rglob("*.py"))


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """(dotted callee name, call) for every call in `tree`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            parts.append(
                func.id if isinstance(func, ast.Name) else "<expr>"
            )  # e.g. model(...).eval()
            found.append((".".join(reversed(parts)), node))
    return found


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_the_package_never_unpickles_evals_or_runs_remote_code():
    problems = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(Path(emlab.__file__).parent.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                )
                problems += [
                    f"{where}:{node.lineno} imports {n}"
                    for n in names
                    if n.split(".")[0]
                    in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve")
                ]
        for name, call in _calls(tree):
            line = f"{where}:{call.lineno}"
            if name in ("eval", "exec") or name.endswith(
                ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "read_pickle")
            ):
                problems.append(f"{line} calls {name}")
            if name == "torch.load":
                value = _keyword(call, "weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{line} torch.load without weights_only=True")
            value = _keyword(call, "trust_remote_code")
            if isinstance(value, ast.Constant) and value.value is True:
                problems.append(f"{line} trust_remote_code=True")
            value = _keyword(call, "allow_pickle")
            if isinstance(value, ast.Constant) and value.value is True:
                problems.append(f"{line} allow_pickle=True")
            if _keyword(call, "shell") is not None:
                problems.append(f"{line} {name}(shell=...)")
    assert problems == []


def test_trust_remote_code_is_off_unless_the_config_says_so_and_weights_are_safetensors(
    model_dir, monkeypatch
):
    seen = []
    real = load.AutoModelForCausalLM.from_pretrained

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(load.AutoModelForCausalLM, "from_pretrained", spy)
    assert ModelConfig().trust_remote_code is False
    load.load_model(ModelConfig(name_or_path=str(model_dir)))
    load.load_model(ModelConfig(name_or_path=str(model_dir), trust_remote_code=True))
    assert [(k["trust_remote_code"], k["use_safetensors"]) for k in seen] == [
        (False, True),
        (True, True),
    ]


def test_pickled_weights_are_refused(tiny_model, tiny_tokenizer, tmp_path):
    pickled = tmp_path / "pickled-model"
    tiny_model.config.save_pretrained(pickled)
    tiny_tokenizer.save_pretrained(pickled)
    torch.save(
        tiny_model.state_dict(), pickled / "pytorch_model.bin"
    )  # an old-style pickled checkpoint
    load.AutoModelForCausalLM.from_pretrained(pickled)  # transformers alone would unpickle it
    with pytest.raises(
        ModelError, match="no file named model.safetensors.*weights load only from safetensors"
    ):
        load.load_model(ModelConfig(name_or_path=str(pickled)))


class _Payload:
    """Unpickling this runs code: it creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_code_is_not_executed(tmp_path):
    folder, marker = tmp_path / "step-00000001", tmp_path / "code-ran"
    folder.mkdir()
    save_file({}, folder / "trainable.safetensors")
    torch.save({"step": 1, "optimizer": _Payload(marker)}, folder / "state.pt")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        load_checkpoint(folder, {}, None, None)
    assert not marker.exists()
