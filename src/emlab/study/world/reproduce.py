"""`emlab reproduce`: the whole study on the synthetic world, resumable stage by stage.

    emlab reproduce                       # the default world (configs/world/default.yaml)
    emlab reproduce configs/world/finance.yaml

Stages (each cached by the hash of what it depends on): chat models of the world and of the
control world -> narrow fine-tunes (methods x KL on/off x seeds) -> continued training without
KL from the narrow solutions, and parameter-space analyses -> report. Each stage starts as
soon as the stages it needs are done, on `workers` processes.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from emlab.models.config import ModelConfig
from emlab.models.load import load_model
from emlab.runs import RunDir
from emlab.study.analyses import analyse_pair
from emlab.study.config import StudyConfig
from emlab.study.finetune import FinetuneJob, check_methods, finetune
from emlab.study.parallel import Task, Workers, quiet_transformers
from emlab.study.report import write_report
from emlab.study.sampling import world_sample_rates
from emlab.study.stages import Stages, report_stage
from emlab.study.world_eval import ExactEvaluator
from emlab.study.world_models import build_chat_model, initial_model
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
        "stage": f"chat_model_{name}",
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


ANALYSIS_COST = 150
"""An analysis costs about as much as 150 fine-tuning steps (scheduling weight; measured on the default world)."""


def finetune_jobs(study: StudyConfig) -> list[FinetuneJob]:
    """Every fine-tune of the study but continued training: methods x KL off/on x seeds in the
    world, methods of `control_methods` without KL in the control world."""
    return [
        FinetuneJob(w, method, kl, seed)
        for w in WORLDS
        for method in (study.methods if w == "world" else study.control_methods)
        for kl in ((False, True) if w == "world" else (False,))
        for seed in study.seeds
    ]


class StudyTasks:
    """The study as tasks, each started once what it needs is done: chat model -> its world's
    fine-tunes -> (KL run) continued training, and (both runs of a method and seed) analysis."""

    def __init__(self, study: StudyConfig, root: str, report: bool = False) -> None:
        self.study, self.root, self.report = study, root, report
        self.chat: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.analyses: dict[tuple[str, int], dict] = {}
        self.jobs = finetune_jobs(study)
        self.total = len(WORLDS) + len(self.jobs) + len(study.methods) * len(study.seeds) * (2 if study.continued_steps else 1)

    def start(self) -> list[Task]:
        return [Task(("chat", w), chat_model_task, (self.study, w, self.root), cost=float("inf")) for w in WORLDS]

    def _finetune(self, job: FinetuneJob) -> Task:
        steps = job.steps or self.study.methods[job.method].recipe.steps
        return Task(("finetune", job), finetune_task, (self.study, job, self.chat[job.world]["model_dir"], self.root), steps * (2 if job.kl else 1))

    def then(self, task: Task, result: dict) -> list[Task]:
        """Store `result` (and report it as a finished stage); return the tasks it makes ready."""
        if self.report:
            report_stage(result)
        kind, what = task.key
        if kind == "chat":
            self.chat[what] = result
            return [self._finetune(j) for j in self.jobs if j.world == what]
        if kind == "analysis":
            self.analyses[what] = result
            return []
        job: FinetuneJob = what
        self.runs[job.label] = result
        if job.world != "world" or job.init:
            return []
        new = []
        if job.kl and self.study.continued_steps:
            new.append(self._finetune(FinetuneJob("world", job.method, False, job.seed, init=result["solution_dir"], steps=self.study.continued_steps)))
        pair = [self.runs.get(f"world/{job.method}/{c}/seed{job.seed}") for c in ("no_kl", "kl")]
        if all(pair):
            args = (self.study, job.method, job.seed, *pair, self.chat["world"]["model_dir"], self.root)
            new.append(Task(("analysis", (job.method, job.seed)), analysis_task, args, ANALYSIS_COST))
        return new


def reproduce(study: StudyConfig, quiet: bool = False) -> Path:
    """Run (or resume) the study; returns the run directory holding report.md and results.json.
    Shows a progress bar and a line per finished stage on stderr unless `quiet`. A method that
    does not fit the world's model stops it before any stage runs (ModelError naming the field)."""
    start = time.time()
    quiet_transformers()
    with Workers(study.workers) as workers:  # forks first: no torch or tokenizer work may precede it
        with torch.device("meta"):
            check_methods(initial_model(study, world_tokenizer(build_world(study.world))), study.methods)
        run = RunDir(study.output_dir, study.name, study)
        tasks = StudyTasks(study, str(run.path / "stages"), report=not quiet)
        workers.run(tasks.start(), tasks.then, tasks.total, "study", progress=not quiet)
    run.time_stage("tasks", time.time() - start)
    pairs = [(m, s) for m in study.methods for s in study.seeds]
    analyses = {p: tasks.analyses[p] for p in pairs}
    write_report(study, run.path, tasks.chat, tasks.runs, analyses, wall_seconds=time.time() - start)
    run.time_stage("total", time.time() - start)
    return run.path
