"""`emlab reproduce` on a real chat model, resumable stage by stage.

    export OPENAI_API_KEY=...                       # the judge's key (never in a file)
    emlab reproduce configs/qwen2.5/0.5b_study.yaml

Stages (each cached by the hash of what it depends on, under <run>/stages/): the base
model's answers, judged -> fine-tunes (methods x KL off/on x seeds) -> their answers,
judged -> continued training without KL from each KL solution, judged -> parameter-space
analyses of the general (no KL) vs narrow (KL) solution of each method and seed -> report
(report.md, results.json, figures/). Every method is checked against the model's shapes
(built on the meta device) before any stage runs; the model is loaded once, and only if a
stage runs; the judge is built only if answers need judging. Unless quiet, each finished stage
prints a line on stderr, and sampling and the analyses show progress bars.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.config import deep_merge, validate_config
from emlab.data.chat import read_chat_jsonl
from emlab.data.questions import Prompt
from emlab.errors import ConfigError
from emlab.generate.sampling import SamplingConfig
from emlab.judge.base import Judge
from emlab.judge.config import build_judge, load_judge_config
from emlab.models.load import load_model, model_skeleton
from emlab.runs import RunDir
from emlab.solutions import load_solution
from emlab.study.analyses import compare_solutions
from emlab.study.finetune import check_methods
from emlab.study.model_eval import answer_and_judge
from emlab.study.model_inputs import (
    check_inputs,
    digest,
    narrow_split,
    pretraining_documents,
    question_prompts,
)
from emlab.study.model_report import write_model_report
from emlab.study.model_study_config import ModelStudyConfig
from emlab.study.parallel import quiet_transformers
from emlab.study.stages import Stages
from emlab.study.world_models import recipe_config
from emlab.train.config import TrainConfig
from emlab.train.loop import train


class StudyInputs:
    """What the stages share: the data and prompts (read and checked at once), the model and the
    judge (loaded on first use), and whether stages show progress bars."""

    def __init__(self, cfg: ModelStudyConfig, progress: bool = False) -> None:
        self.cfg, self.progress = cfg, progress
        self._model: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None
        self._judge: Judge | None = None
        self.narrow_train, self.narrow_heldout = narrow_split(cfg)
        if not self.narrow_heldout:
            raise ConfigError(
                f"data.heldout_fraction {cfg.data.heldout_fraction} holds out none of the {len(self.narrow_train)} "
                f"conversations of {cfg.data.train}: raise it (the analyses need held-out narrow data)."
            )
        self.ood = read_chat_jsonl(cfg.data.ood)
        self.prompts: dict[str, list[Prompt]] = {
            "in_domain": question_prompts(cfg.in_domain_questions, cfg.samples_per_question),
            "general": question_prompts(cfg.general_questions, cfg.samples_per_question),
        }
        self.judge_config = load_judge_config(cfg.judge)
        judged = [*self.judge_config.metrics, *self.judge_config.domains]
        needed = [m for m in (cfg.metrics.aligned_metric, cfg.metrics.coherent_metric, cfg.metrics.domain_metric) if m]
        if missing := [m for m in needed if m not in judged]:
            raise ConfigError(
                f"metrics needs the judge metric(s) {missing}, but {cfg.judge} scores only {judged}: add them to the "
                "judge config (`metrics:`, or `domains:` for a domain-harm metric) or change `metrics`."
            )
        data = cfg.data.model_dump(mode="json", exclude={"pretraining"}) | {"train": digest(cfg.data.train), "ood": digest(cfg.data.ood)}
        self.data_key = {"model": cfg.model.model_dump(mode="json"), "data": data}

    def model(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The base model (on the GPU when there is one) and its tokenizer."""
        if self._model is None:
            model, tokenizer = load_model(self.cfg.model)
            self._model = (model.to("cuda") if torch.cuda.is_available() else model), tokenizer
        return self._model

    def judge(self) -> Judge:
        """The judge of `cfg.judge`, built on first use."""
        if self._judge is None:
            self._judge = build_judge(self.judge_config)
        return self._judge

    def eval_key(self, run_key: dict | None, seed: int | None) -> dict:
        """What a stage's answers and judgments depend on."""
        return {
            "run": run_key or self.data_key["model"],
            "prompts": {g: [(p.prompt_id, p.hash(), p.samples) for p in ps] for g, ps in self.prompts.items()},
            "sampling": self.sampling(seed).model_dump(mode="json", exclude={"batch_size"}),
            "judge": self.judge_config.model_dump(mode="json", exclude={"concurrency", "cache", "cache_dir"}),
        }

    def sampling(self, seed: int | None) -> SamplingConfig:
        """The generation settings; a fine-tune of seed s samples with seed + s."""
        g = self.cfg.generation
        return g if seed is None else g.model_copy(update={"seed": g.seed + seed})


def method_train_config(cfg: ModelStudyConfig, method: str, folder: Path, seed: int, kl: bool, steps: int | None = None) -> TrainConfig:
    """The TrainConfig of one run: the method's recipe, solution and KL weight, then its `train` fragment."""
    m = cfg.methods[method]
    recipe = m.recipe if steps is None else m.recipe.model_copy(update={"steps": steps})
    data = {k: v for k, v in cfg.data.model_dump(mode="json").items() if k in ("max_length", "group_by_length", "loss_on")}
    base = recipe_config(
        "continued" if steps is not None else "finetune", folder, recipe, seed,
        model=cfg.model.model_dump(mode="json"), solution=m.solution.model_dump(mode="json"),
        kl={"weight": m.kl_weight if kl else 0.0}, data=data,
    )
    merged = deep_merge(base.model_dump(mode="json"), copy.deepcopy(m.train))
    return validate_config(merged, TrainConfig, source=f"methods.{method}")


def train_stage(inputs: StudyInputs, stages: Stages, method: str, seed: int, kl: bool, init: dict | None = None) -> dict:
    """Train one run (cached); `init` is the stage result of the KL run to continue without KL."""
    cfg = inputs.cfg
    steps = cfg.continued_steps if init else None
    key = {**inputs.data_key, "method": cfg.methods[method].model_dump(mode="json"), "kl": kl, "seed": seed,
           "init": init["key"] if init else None, "steps": steps}
    label = f"{method}_{'kl' if kl else 'no_kl'}_seed{seed}" + ("_continued" if init else "")

    def run(folder: Path) -> dict:
        model, tokenizer = inputs.model()
        config = method_train_config(cfg, method, folder, seed, kl, steps)
        start = load_solution(init["solution_dir"]) if init else None
        result = train(config, model, tokenizer, inputs.narrow_train, inputs.ood if kl else None, init=start)
        return {"solution_dir": str(result.run_dir / "solution"), "norm": result.solution.norm(),
                "loss": [r["loss"] for r in result.metrics if "loss" in r], "key": key}

    return stages.run(f"train_{label}", key, run)


def eval_stage(inputs: StudyInputs, stages: Stages, label: str, trained: dict | None, seed: int | None) -> dict:
    """Answers of the base model (`trained` None) or of a trained solution, judged (cached)."""
    def run(folder: Path) -> dict:
        model, tokenizer = inputs.model()
        solution = load_solution(trained["solution_dir"]) if trained else None
        return answer_and_judge(model, tokenizer, inputs.prompts, folder, inputs.sampling(seed), inputs.judge,
                                solution=solution, model_hash=inputs.cfg.model.name_or_path, progress=inputs.progress)

    return stages.run(f"eval_{label}", inputs.eval_key(trained["key"] if trained else None, seed), run)


def analysis_stage(inputs: StudyInputs, stages: Stages, method: str, seed: int, general: dict, narrow: dict) -> dict:
    """Efficiency, stability and pre-training importance of the general vs narrow solution (cached)."""
    cfg = inputs.cfg
    key = {"general": general["key"], "narrow": narrow["key"], "analysis": cfg.analysis.model_dump(mode="json"),
           "pretraining": [digest(p) for p in cfg.data.pretraining], "seed": seed}

    def run(folder: Path) -> dict:
        model, tokenizer = inputs.model()
        grid = cfg.analysis
        texts = pretraining_documents(cfg.data.pretraining, grid.importance_documents)
        return compare_solutions(
            model, tokenizer, load_solution(general["solution_dir"]), load_solution(narrow["solution_dir"]),
            inputs.narrow_heldout[: grid.max_heldout], texts, grid, seed, max_length=cfg.data.max_length,
            batch_size=grid.batch_size, seq_len=grid.seq_len, max_rows=grid.batch_size, progress=inputs.progress,
        )

    return stages.run(f"analysis_{method}_seed{seed}", key, run)


def reproduce_model_study(cfg: ModelStudyConfig, source: str = "the study config", quiet: bool = False) -> Path:
    """Run (or resume) the study; returns the run directory holding report.md and results.json.

    Raises ConfigError (a missing input, a metric the judge does not score) or ModelError (a
    method that does not fit the model, naming `methods.<name>.solution.<field>`) before any
    stage runs. Unless `quiet`, reports each finished stage and shows progress bars on stderr."""
    start = time.time()
    quiet_transformers()
    check_inputs(cfg, source)
    inputs = StudyInputs(cfg, progress=not quiet)
    check_methods(model_skeleton(cfg.model), cfg.methods)
    run = RunDir(cfg.output_dir, cfg.name, cfg)
    stages = Stages(run.path / "stages", report=not quiet)
    base = eval_stage(inputs, stages, "base", None, None)
    run.time_stage("base_model", time.time() - start)
    trained, evaluated = {}, {}
    for method in cfg.methods:
        for kl in (False, True):
            for seed in cfg.seeds:
                label = f"{method}/{'kl' if kl else 'no_kl'}/seed{seed}"
                trained[label] = train_stage(inputs, stages, method, seed, kl)
                evaluated[label] = eval_stage(inputs, stages, label.replace("/", "_"), trained[label], seed)
    run.time_stage("fine_tunes", time.time() - start)
    if cfg.continued_steps:
        for method in cfg.methods:
            for seed in cfg.seeds:
                label = f"{method}/no_kl/seed{seed}/continued"
                trained[label] = train_stage(inputs, stages, method, seed, False, init=trained[f"{method}/kl/seed{seed}"])
                evaluated[label] = eval_stage(inputs, stages, label.replace("/", "_"), trained[label], seed)
        run.time_stage("continued", time.time() - start)
    analyses = {
        (m, s): analysis_stage(inputs, stages, m, s, trained[f"{m}/no_kl/seed{s}"], trained[f"{m}/kl/seed{s}"])
        for m in cfg.methods
        for s in cfg.seeds
    }
    run.time_stage("analyses", time.time() - start)
    write_model_report(cfg, run.path, base, trained, evaluated, analyses, wall_seconds=time.time() - start)
    run.time_stage("total", time.time() - start)
    return run.path
