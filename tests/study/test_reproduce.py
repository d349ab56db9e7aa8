"""A reduced world study end to end: report structure, numbers computed from the samples, resume."""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from emlab.cli import app
from emlab.config import validate_config, with_overrides
from emlab.errors import ModelError
from emlab.report.figures import DPI
from emlab.study.common.keys import RunKey
from emlab.study.common.stages import cache_root
from emlab.study.world.config import StudyConfig
from emlab.study.world.reproduce import StudyGraph, reproduce

METHODS = ("full", "lora_r1", "lora_r8", "steering")


def reduced_study(tmp_path) -> StudyConfig:
    overrides = {
        "output_dir": str(tmp_path),
        "name": "reduced",
        "seeds": [0, 1],
        "workers": 1,
        "world.n_documents": 200,
        "world.answers_per_kind": 2,  # 8 answers of each kind per question, not 64
        "model.hidden_size": 16,
        "model.num_layers": 2,
        "model.num_heads": 2,
        "model.intermediate_size": 32,
        "pretrain.steps": 15,
        "pretrain.batch_size": 8,
        "chat_tune.steps": 3,
        "samples_per_question": 1,
        "eval_every": 2,
        "continued_steps": 2,
        "analysis.multipliers": 3,
        "analysis.eps": [0.5, 1.0],
        "analysis.noise_seeds": 2,
        "analysis.importance_documents": 4,
        "analysis.importance_fractions": [0.0, 1.0],
    }
    for m in METHODS:
        overrides[f"methods.{m}.recipe.steps"] = 3
    data = with_overrides(StudyConfig().model_dump(mode="json"), overrides)
    data["methods"]["steering"]["solution"]["layer"] = 1  # the reduced model has 2 layers
    return validate_config(data, StudyConfig)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG's header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def stage_folders(run: Path, pattern: str) -> list[Path]:
    """The stage folders (in the shared cache) that the study in `run` used, by name pattern."""
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    return sorted(Path(folder) for name, folder in stages.items() if re.fullmatch(pattern, name))


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    study = reduced_study(tmp)
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        out = reproduce(study)
    return study, out, stderr.getvalue()


@pytest.mark.system
def test_report_structure(study_run):
    study, out, _ = study_run
    results = json.loads((out / "results.json").read_text())
    for m in METHODS:
        for cond in ("no_kl", "kl"):
            block = results["world"][m][cond]
            for key in ("in_domain_rate", "ood_rate"):
                assert 0.0 <= block[f"{key}_ci_low"] <= block[key] <= block[f"{key}_ci_high"] <= 1.0
        assert {"continued", "continued_kl"} <= set(results["world"][m])
        assert set(results["efficiency_at_equal_loss"][m]) == {
            "target_loss",
            "general",
            "narrow",
            "random",
        }
        assert set(results["analyses"][m]) >= {
            "loss_at_general_norm_general",
            "relative_loss_increase_eps_0.5_narrow",
            "kl_at_general_norm_random",
        }
    for m in study.control_methods:
        assert 0.0 <= results["control"][m]["no_kl"]["ood_rate"] <= 1.0
    assert 0.0 <= results["chat_model"]["misaligned_rate"] <= 1.0
    assert results["wall_seconds"] > 0
    targets = {t["name"]: t for t in results["targets"]}
    assert (
        targets["lora_r8 with KL: OOD rate"]["measured"]
        == results["world"]["lora_r8"]["kl"]["ood_rate"]
    )
    steering = results["world"]["steering"]
    assert targets["steering with KL: OOD rate"]["measured"] == steering["kl"]["ood_rate"]
    assert (
        targets["steering narrow, KL removed: OOD rate"]["measured"]
        == steering["continued"]["ood_rate"]
    )
    assert (
        targets["steering general, KL added: OOD rate"]["measured"]
        == steering["continued_kl"]["ood_rate"]
    )
    norm = targets[
        "full: norm the general solution needs to reach the narrow solution's held-out loss"
    ]
    equal_loss = results["efficiency_at_equal_loss"]["full"]
    assert norm["measured"] == equal_loss["general"]["norm_to_narrow_loss"]["mean"]
    assert norm["limit"] == equal_loss["narrow"]["norm_to_narrow_loss"]["mean"]
    report = (out / "report.md").read_text()
    assert "## Targets" in report and "| lora_r8 with KL: OOD rate |" in report
    assert "| steering without KL: OOD incoherent rate |" in report
    assert "| world | lora_r1 | kl |" in report and "| control | steering | no_kl |" in report
    assert len(results["chat_model"]["persona_probe"]["layers"]) == 2
    assert "Persona linear probe" in report and "steering acts at the output of layer 1: " in report
    assert (
        "## Efficiency at equal loss" in report
        and "| lora_r1 | " in report.split("## Efficiency at equal loss")[1]
    )
    for name in ("em_over_steps", "continued", "efficiency", "stability", "importance"):
        png = out / "figures" / f"{name}.png"
        assert png.stat().st_size > 10_000 and f"figures/{name}.png" in report
        # one 4.2 x 3.6 inch panel per method (the figures' content: tests/study/test_figures.py)
        assert png_size(png) == (round(4.2 * DPI) * len(METHODS), round(3.6 * DPI)), name


@pytest.mark.system
def test_numbers_are_computed_from_the_samples(study_run):
    _, out, _ = study_run
    results = json.loads((out / "results.json").read_text())
    samples = [
        json.loads((p / "result.json").read_text())
        for p in stage_folders(out, r"sample_world_lora_r8_no_kl_seed\d")
    ]
    trained = [
        json.loads((p / "result.json").read_text())
        for p in stage_folders(out, r"train_world_lora_r8_no_kl_seed\d")
    ]
    assert len(samples) == len(trained) == 2
    for group in ("in_domain", "ood"):
        by_question: dict[str, list[bool]] = {}
        for run in samples:
            for s in run["samples"]:
                if s["group"] == group:
                    by_question.setdefault(s["question_id"], []).append(s["label"] == "bad")
        expected = sum(sum(v) / len(v) for v in by_question.values()) / len(by_question)
        assert results["world"]["lora_r8"]["no_kl"][f"{group}_rate"] == pytest.approx(expected)
    exact = sum(r["exact"]["p_bad_ood"] for r in trained) / 2
    assert results["world"]["lora_r8"]["no_kl"]["ood_exact_p_bad"] == pytest.approx(exact)


@pytest.mark.system
def test_a_second_run_reuses_every_stage(study_run):
    study, out, _ = study_run
    before = json.loads((out / "results.json").read_text())
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        assert reproduce(study, quiet=True) == out
    assert stderr.getvalue() == ""
    after = json.loads((out / "results.json").read_text())
    assert (
        len(list((out.parent / "stages").glob("chat_model_*/model/model.safetensors"))) == 2
    )  # shared cache
    assert before["stages_reused"] == 0 and after["stages_computed"] == 0
    assert after["stage_seconds_total"] == pytest.approx(before["stage_seconds_total"])
    for key in ("wall_seconds", "stages_reused", "stages_computed"):
        before.pop(key), after.pop(key)
    assert before == after


@pytest.mark.system
def test_the_study_reports_each_finished_stage_and_its_progress(study_run):
    study, _, stderr = study_run
    lines = [line for line in stderr.splitlines() if line.startswith("stage ")]
    # 2 chat models and their evaluations; 4 methods x 2 KL x 2 seeds and 2 control methods x 2
    # seeds fine-tunes and
    # 4 x 2 x 2 continued (both directions), each trained and sampled; 4 x 2 analyses
    assert len(lines) == 2 + 2 + 2 * (16 + 4 + 16) + 8 == 84
    for stage in (
        "chat_model_world",
        "chat_eval_control",
        "train_world_lora_r1_kl_seed1",
        "sample_control_steering_no_kl_seed0",
        "train_world_full_no_kl_seed0_continued",
        "sample_world_full_no_kl_seed0_continued",
        "train_world_full_kl_seed1_continued",
        "analysis_lora_r8_seed1",
    ):
        assert any(
            re.fullmatch(rf"stage {stage}: computed in \d+\.\d s", line) for line in lines
        ), (stage, lines)
    assert re.search(
        r"study 84/84 stages: 100%\|.*\| \[\d+:\d+<00:00", stderr
    )  # the overall bar and its estimate of the time left


@pytest.mark.system  # uses the reduced study (study_run)
def test_sampling_the_fine_tune_in_memory_equals_sampling_the_saved_one(study_run, tmp_path):
    """The study samples each fine-tune right after training it, from the model in memory
    (Task.follows); sampling the saved solution instead gives the same answers and rates."""
    study, *_ = study_run
    graph = StudyGraph(study, str(cache_root(study.output_dir)))
    for method in METHODS:
        task = graph.sample[RunKey(method, True, 0, "world")]
        chat, _ = task.train.chat.run()
        trained, _ = task.train.run(chat)
        cached, _ = task.run(chat, trained)
        assert trained.reused and cached.reused and cached.stage_seconds > 0
        (tmp_path / method).mkdir()
        loaded = task.compute(tmp_path / method, chat, trained)
        assert (loaded.rates, loaded.samples) == (cached.rates, cached.samples)


def test_a_method_that_does_not_fit_the_model_stops_the_study_before_any_stage(tmp_path):
    data = reduced_study(tmp_path).model_dump(mode="json")
    data["methods"]["steering"]["solution"]["layer"] = 2  # the reduced model has layers 0 and 1
    with pytest.raises(
        ModelError,
        match=(
            r"methods\.steering\.solution\.layer: layer 2 does not exist: this model has layers"
            r" 0\.\.1"
        ),
    ):
        reproduce(validate_config(data, StudyConfig), quiet=True)
    assert not list(tmp_path.iterdir())  # no chat model, no run folder


def test_a_recipe_sets_every_optimiser_field_of_its_stage(tmp_path):
    from emlab.study.common.config import RecipeConfig, recipe_config

    recipe = RecipeConfig(
        steps=7, batch_size=5, lr=0.02, warmup_steps=2, schedule="linear", betas=(0.8, 0.9)
    )
    config = recipe_config("stage", tmp_path, recipe, seed=3, solution={"kind": "full"})
    assert (config.max_steps, config.batch_size, config.seed) == (7, 5, 3)
    assert (
        config.optim.lr,
        config.optim.warmup_steps,
        config.optim.schedule,
        config.optim.betas,
    ) == (0.02, 2, "linear", (0.8, 0.9))


@pytest.mark.system
def test_more_samples_resample_without_retraining(study_run, tmp_path):
    """Another study that differs only in samples_per_question (its own run folder) reuses every
    chat model, fine-tune and analysis from the shared stage cache and samples anew."""
    study, out, _ = study_run
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study.model_dump(mode="json")))
    kept = [
        *out.parent.glob("stages/chat_model_*/model/model.safetensors"),
        *out.parent.glob("stages/train_*/*/solution/tensors.safetensors"),
    ]
    mtimes = [p.stat().st_mtime_ns for p in kept]
    result = CliRunner().invoke(app, ["reproduce", str(config), "--set", "samples_per_question=2"])
    assert result.exit_code == 0, result.output
    again = Path(re.search(r"results: (.*)results\.json", result.output).group(1))
    assert again != out and again.parent == out.parent
    lines = dict(
        re.fullmatch(r"stage (\S+): (reused|computed).*", line).groups()
        for line in result.stderr.splitlines()
        if line.startswith("stage ")
    )
    assert len(lines) == 84
    computed = sorted(name for name, how in lines.items() if how == "computed")
    assert computed == sorted(
        ["chat_eval_world", "chat_eval_control", *(n for n in lines if n.startswith("sample_"))]
    )
    assert len(computed) == 2 + 36
    assert all(
        how == "reused"
        for name, how in lines.items()
        if name.startswith(("chat_model_", "train_", "analysis_"))
    )
    assert (
        len(kept) == 2 + 36 and [p.stat().st_mtime_ns for p in kept] == mtimes
    )  # nothing retrained
    results = json.loads((again / "results.json").read_text())
    assert (results["stages_computed"], results["stages_reused"]) == (38, 46)
    for folder in stage_folders(again, r"sample_.*"):
        per_question: dict[str, int] = {}
        for s in json.loads((folder / "result.json").read_text())["samples"]:
            per_question[s["question_id"]] = per_question.get(s["question_id"], 0) + 1
        assert set(per_question.values()) == {2}


@pytest.mark.system
def test_continued_training_can_carry_the_optimiser_state(study_run):
    study, out, _ = study_run
    carried = study.model_copy(update={"continued_optimizer": "carried"})
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        run = reproduce(carried)
    computed = [
        line
        for line in stderr.getvalue().splitlines()
        if line.startswith("stage ") and ": computed in" in line
    ]
    assert len(computed) == 2 * 16 and all(
        "_continued: computed" in line for line in computed
    )  # the rest is reused
    (folder,) = stage_folders(run, r"train_world_lora_r1_no_kl_seed0_continued")
    # resumed at the KL run's last step (3) with its AdamW state, then 2 more steps without KL
    metrics = [
        json.loads(x) for x in next(folder.glob("**/metrics.jsonl")).read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == [4, 5] and all(m["kl"] == 0 for m in metrics)
    # continued with weight decay: continued_decay of the solution per step at the method's lr
    optim = json.loads(next(folder.glob("**/manifest.json")).read_text())["config"]["optim"]
    lr = carried.methods["lora_r1"].recipe.lr
    assert (
        optim["weight_decay"] == pytest.approx(carried.continued_decay / lr) and optim["lr"] == lr
    )
    result = json.loads((folder / "result.json").read_text())
    assert [p["step"] for p in result["curve"]] == [
        1,
        2,
    ]  # counted from the start of the continued run
    assert (
        f"(carried optimiser state; weight decay removing {carried.continued_decay:g} of the"
        " solution per step)" in (run / "report.md").read_text()
    )
