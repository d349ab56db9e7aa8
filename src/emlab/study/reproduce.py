"""`emlab reproduce`: the whole study on the synthetic world, resumable stage by stage.

    emlab reproduce                       # the default world (configs/world/default.yaml)
    emlab reproduce configs/world/finance.yaml

Stages (each cached by the hash of what it depends on): chat models of the world and of the
control world -> narrow fine-tunes (methods x KL on/off x seeds) -> continued training without
KL from the narrow solutions -> parameter-space analyses -> report.
"""

from __future__ import annotations

import time
from pathlib import Path

from emlab.models.config import ModelConfig
from emlab.models.load import load_model
from emlab.runs import RunDir
from emlab.study.analyses import analyse_pair
from emlab.study.config import StudyConfig
from emlab.study.finetune import FinetuneJob, finetune
from emlab.study.parallel import Workers, quiet_transformers
from emlab.study.report import write_report
from emlab.study.sampling import world_sample_rates
from emlab.study.stages import Stages
from emlab.study.world_eval import ExactEvaluator
from emlab.study.world_models import build_chat_model
from emlab.world import WorldConfig, build_world, world_tokenizer

WORLDS = ("world", "control")


def world_config(study: StudyConfig, name: str) -> WorldConfig:
    """The world (`world`) or the control world without the misaligned persona (`control`)."""
    return study.world if name == "world" else study.world.control()


def chat_model_key(study: StudyConfig, name: str) -> dict:
    return {
        "world": world_config(study, name).model_dump(mode="json"),
        "model": study.model.model_dump(mode="json"),
        "pretrain": study.pretrain.model_dump(mode="json"),
        "chat_tune": study.chat_tune.model_dump(mode="json"),
    }


def chat_model_task(study: StudyConfig, name: str, root: str) -> dict:
    """Pre-train + chat-tune one world's model, then measure its misalignment. The model is
    cached in `<output_dir>/chat_models/` by the hash of what it depends on, so studies with
    the same world and recipes share it."""
    world = build_world(world_config(study, name))
    key = chat_model_key(study, name)
    built = Stages(Path(study.output_dir) / "chat_models").run(
        f"chat_model_{name}", key, lambda folder: build_chat_model(study, world, world_tokenizer(world), folder)
    )

    def evaluate(folder: Path) -> dict:
        model, tokenizer = load_model(ModelConfig(name_or_path=built["model_dir"]))
        exact = ExactEvaluator(world, tokenizer, study.trained_domain)(model)
        sampled = world_sample_rates(model, tokenizer, world, study.trained_domain, study.samples_per_question, 0, folder / "samples.jsonl")
        rows = sampled["rows"]
        misaligned = sum(r["label"] == "bad" for r in rows) / len(rows)
        return {"exact": exact, "sampled": sampled["rates"], "misaligned_rate": misaligned, "n_samples": len(rows)}

    eval_key = {"chat_model": key, "domain": study.trained_domain, "samples": study.samples_per_question}
    evaluated = Stages(root).run(f"chat_eval_{name}", eval_key, evaluate)
    return {
        **built,
        **evaluated,
        "stage_seconds": built.get("stage_seconds", 0.0) + evaluated.get("stage_seconds", 0.0),  # older stage results lack it
        "reused": built["reused"] and evaluated["reused"],
    }


def finetune_task(study: StudyConfig, job: FinetuneJob, model_dir: str, root: str) -> dict:
    """One fine-tune (cached), evaluated exactly and by sampling."""
    key = {
        "chat_model": chat_model_key(study, job.world),
        "job": job.key(),
        "method": study.methods[job.method].model_dump(mode="json"),
        "domain": study.trained_domain,
        "samples": study.samples_per_question,
        "eval_every": study.eval_every,
    }

    def run(folder: Path) -> dict:
        return finetune(study, build_world(world_config(study, job.world)), model_dir, job, folder)

    return Stages(root).run(f"finetune_{job.label.replace('/', '_')}", key, run)


def analysis_task(study: StudyConfig, method: str, seed: int, general: dict, narrow: dict, model_dir: str, root: str) -> dict:
    """Efficiency, stability and pre-training importance of the general vs narrow solution (cached)."""
    key = {"general": general["solution_dir"], "narrow": narrow["solution_dir"], "norms": [general["norm"], narrow["norm"]]}

    def run(folder: Path) -> dict:
        world = build_world(study.world)
        return analyse_pair(study, world, model_dir, general["solution_dir"], narrow["solution_dir"], seed)

    return Stages(root).run(f"analysis_{method}_seed{seed}", key, run)


def reproduce(study: StudyConfig) -> Path:
    """Run (or resume) the study; returns the run directory holding report.md and results.json."""
    start = time.time()
    quiet_transformers()
    run = RunDir(study.output_dir, study.name, study)
    root = str(run.path / "stages")
    with Workers(study.workers) as workers:
        chat = dict(zip(WORLDS, workers.map(chat_model_task, [(study, w, root) for w in WORLDS], "chat models"), strict=True))
        run.time_stage("chat_models", time.time() - start)
        jobs = [
            FinetuneJob(w, method, kl, seed)
            for w in WORLDS
            for method in (study.methods if w == "world" else study.control_methods)
            for kl in ((False, True) if w == "world" else (False,))
            for seed in study.seeds
        ]
        done = workers.map(finetune_task, [(study, j, chat[j.world]["model_dir"], root) for j in jobs], "fine-tunes")
        runs = {j.label: r for j, r in zip(jobs, done, strict=True)}
        run.time_stage("fine_tunes", time.time() - start)
        continued_jobs = [
            FinetuneJob("world", m, False, s, init=runs[f"world/{m}/kl/seed{s}"]["solution_dir"], steps=study.continued_steps)
            for m in study.methods
            for s in study.seeds
        ] if study.continued_steps else []
        continued = workers.map(
            finetune_task, [(study, j, chat["world"]["model_dir"], root) for j in continued_jobs], "continued training"
        )
        runs |= {j.label: r for j, r in zip(continued_jobs, continued, strict=True)}
        pairs = [(m, s) for m in study.methods for s in study.seeds]
        analyses = workers.map(
            analysis_task,
            [(study, m, s, runs[f"world/{m}/no_kl/seed{s}"], runs[f"world/{m}/kl/seed{s}"], chat["world"]["model_dir"], root) for m, s in pairs],
            "analyses",
        )
        run.time_stage("analyses", time.time() - start)
    write_report(study, run.path, chat, runs, dict(zip(pairs, analyses, strict=True)), wall_seconds=time.time() - start)
    run.time_stage("total", time.time() - start)
    return run.path
