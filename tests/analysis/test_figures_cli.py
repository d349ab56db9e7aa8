"""Figures are written; the analyze CLI runs end to end on a saved tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from emlab.analysis.cli import analyze_app
from emlab.analysis.efficiency import compare_efficiency
from emlab.analysis.figures import (
    cosines_figure,
    efficiency_figure,
    importance_figure,
    plot_cosines,
    plot_efficiency,
    plot_importance,
    plot_stability,
    stability_figure,
)
from emlab.analysis.importance import KLEvaluator, pretraining_importance
from emlab.analysis.loss import LossEvaluator
from emlab.analysis.stability import compare_stability
from emlab.analysis.text import pydoc_texts, text_batches
from emlab.report.figures import NORM_LABEL

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path, min_bytes=20_000):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > min_bytes


def test_figures_show_every_curve(
    tmp_path, model, tiny_tokenizer, toy_data, lora_general, lora_narrow
):
    sols = {"general": lora_general, "narrow": lora_narrow}
    evaluator = LossEvaluator(model, tiny_tokenizer, toy_data[0][:8])
    kl = KLEvaluator(
        model,
        text_batches(tiny_tokenizer, pydoc_texts()[:2], seq_len=16, batch_size=4, max_chunks=4),
    )
    efficiency = compare_efficiency(evaluator, sols, multipliers=[0, 0.5, 1, 1.5, 2])
    stability = compare_stability(evaluator, sols, eps=[0.1, 0.5, 1.0], seeds=range(3))
    importance = pretraining_importance(kl, sols, norms=[0, 2, 4], random_seeds=(0, 1))

    (ax,) = efficiency_figure(efficiency).axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [label.split(" (")[0] for label in labels] == [
        "general",
        "narrow",
        "random",
        "base model",
    ]
    # per curve: the loss over norms, the trained solution (m = 1), the minimum
    per_curve = [ax.lines[3 * i : 3 * i + 3] for i in range(len(efficiency.curves))]
    for c, (curve, trained, minimum) in zip(efficiency.curves, per_curve, strict=True):
        assert list(curve.get_xdata()) == pytest.approx(c.norms) and list(
            curve.get_ydata()
        ) == pytest.approx(c.losses)
        assert (trained.get_xdata()[0], trained.get_ydata()[0]) == pytest.approx(
            (c.norm, c.loss_at_one)
        )
        assert minimum.get_ydata()[0] == pytest.approx(min(c.losses))
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(efficiency.base_loss)
    assert ax.get_xlabel() == NORM_LABEL and ax.get_ylabel() == "loss on narrow data (nats / token)"

    (ax,) = stability_figure(stability).axes
    assert (
        ax.get_xscale() == "log" and len(ax.lines) == len(ax.collections) == 2
    )  # a band per curve
    for c, line in zip(stability.curves, ax.lines, strict=True):
        assert line.get_label() == f"{c.name} (3 seeds)"
        assert list(line.get_xdata()) == [0.1, 0.5, 1.0] and list(
            line.get_ydata()
        ) == pytest.approx(c.summary.mean)

    (ax,) = importance_figure(importance).axes
    curves = [line for line in ax.lines if line.get_linestyle() != ":"]
    assert [line.get_label() for line in curves] == ["general", "narrow", "random (2 seeds)"]
    assert list(curves[2].get_ydata()) == pytest.approx(
        np.mean(importance.kl["random"], axis=0).tolist()
    )
    assert list(curves[0].get_ydata())[0] == pytest.approx(0.0, abs=1e-9)  # norm 0: no change
    trained = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"]
    assert trained == pytest.approx([lora_general.norm(), lora_narrow.norm()])

    ax, colorbar = cosines_figure(torch.eye(3), ["a", "b", "c"]).axes
    assert ax.images[0].get_array().tolist() == torch.eye(3).tolist()
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "a",
        "b",
        "c",
    ] and colorbar.get_ylabel() == "cosine similarity"

    paths = [
        plot_efficiency(efficiency, tmp_path / "eff.png"),
        plot_stability(stability, tmp_path / "stab.png"),
        plot_importance(importance, tmp_path / "imp.png"),
        plot_cosines(torch.eye(3), ["a", "b", "c"], tmp_path / "sub" / "cos.png"),
    ]
    for path in paths:
        assert _is_png(path, 10_000), path


@pytest.fixture
def chat_reader(monkeypatch):
    """`emlab.data.chat.read_chat_jsonl`, or a stand-in while that module does not exist yet."""
    if importlib.util.find_spec("emlab.data.chat") is None:
        fake = types.ModuleType("emlab.data.chat")
        fake.read_chat_jsonl = lambda path: [
            json.loads(line)["messages"] for line in open(path) if line.strip()
        ]
        monkeypatch.setitem(sys.modules, "emlab.data.chat", fake)


def test_analyze_cli_end_to_end(
    tmp_path, model, tiny_tokenizer, toy_data, lora_general, lora_narrow, steering, chat_reader
):
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    lora_general.save(tmp_path / "general" / "solution")
    lora_narrow.save(tmp_path / "narrow")
    steering.save(tmp_path / "steer")
    for name, convs in (("bad", toy_data[0][:12]), ("good", toy_data[1][:12])):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"messages": c}) + "\n" for c in convs)
        )
    common = ["--model", str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    sols = [str(tmp_path / "general" / "solution"), f"kl={tmp_path / 'narrow'}"]
    runner = CliRunner()
    for args in (
        ["efficiency", *sols, "--data", str(tmp_path / "bad.jsonl"), "--points", "5", *common],
        [
            "stability",
            *sols,
            "--data",
            str(tmp_path / "bad.jsonl"),
            "--eps",
            "0.1",
            "--eps",
            "1.0",
            "--seeds",
            "3",
            *common,
        ],
        [
            "importance",
            *sols,
            "--text",
            "pydoc",
            "--norm",
            "0",
            "--norm",
            "5",
            "--chunks",
            "4",
            "--seq-len",
            "16",
            *common,
        ],
        [
            "directions",
            str(tmp_path / "steer"),
            "--aligned",
            str(tmp_path / "good.jsonl"),
            "--misaligned",
            str(tmp_path / "bad.jsonl"),
            *common,
        ],
    ):
        result = runner.invoke(analyze_app, args)
        assert result.exit_code == 0, (args[0], result.output, result.exception)
        assert _is_png(tmp_path / "out" / f"{args[0]}.png", 10_000)
    eff = json.loads((tmp_path / "out" / "efficiency.json").read_text())
    assert [c["name"] for c in eff["curves"]] == [
        "general",
        "kl",
        "random",
    ]  # run folder name for .../general/solution
    assert eff["curves"][0]["norm"] == pytest.approx(lora_general.norm(), rel=1e-6)
    n_bad = len((tmp_path / "bad.jsonl").read_text().splitlines())
    assert eff["data"]["conversations"] == eff["data"]["kept"] == n_bad > 0  # none cut
    assert eff["data"]["dropped"] == eff["data"]["truncated"] == 0
    stab = json.loads((tmp_path / "out" / "stability.json").read_text())
    assert stab["curves"][1]["eps"] == [0.1, 1.0] and len(stab["curves"][1]["seeds"]) == 3
    imp = json.loads((tmp_path / "out" / "importance.json").read_text())
    assert imp["norms"] == [0.0, 5.0] and imp["kl"]["general"][0][0] == pytest.approx(0.0, abs=1e-9)
    dirs = json.loads((tmp_path / "out" / "directions.json").read_text())
    assert len(dirs["norms"]) == 2 and -1 <= dirs["steering_cosines"]["steer"] <= 1
    bad = runner.invoke(
        analyze_app,
        ["efficiency", str(tmp_path / "nowhere"), "--data", str(tmp_path / "bad.jsonl"), *common],
    )
    assert bad.exit_code == 2 and "not an emlab solution folder" in bad.output


def test_analyses_show_progress_on_stderr_unless_quiet(
    tmp_path, model, tiny_tokenizer, toy_data, lora_general, lora_narrow
):
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    lora_general.save(tmp_path / "general")
    lora_narrow.save(tmp_path / "narrow")
    (tmp_path / "bad.jsonl").write_text(
        "".join(json.dumps({"messages": c}) + "\n" for c in toy_data[0][:4])
    )
    common = [
        str(tmp_path / "general"),
        str(tmp_path / "narrow"),
        "--model",
        str(tmp_path / "model"),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]
    runs = {
        "importance": [
            "--text",
            "pydoc",
            "--norm",
            "0",
            "--norm",
            "5",
            "--chunks",
            "4",
            "--seq-len",
            "16",
            "--random-seeds",
            "1",
        ],
        "efficiency": ["--data", str(tmp_path / "bad.jsonl"), "--points", "3"],
        "stability": ["--data", str(tmp_path / "bad.jsonl"), "--eps", "0.5", "--seeds", "2"],
    }
    for name, args in runs.items():
        shown = CliRunner().invoke(analyze_app, [name, *common, *args])
        quiet = CliRunner().invoke(analyze_app, [name, *common, *args, "--quiet"])
        assert shown.exit_code == 0 and quiet.exit_code == 0, (name, shown.output, quiet.output)
        assert f"{name}: 100%" in shown.stderr and "pass/s" in shown.stderr, (name, shown.stderr)
        assert quiet.stderr == "", (name, quiet.stderr)
    # importance: 2 batches of 2 chunks x 3 directions at norm 5, one pass each (norm 0: the base,
    # KL 0, no pass)
    importance = CliRunner().invoke(analyze_app, ["importance", *common, *runs["importance"]])
    assert "| 6/6 " in importance.stderr
