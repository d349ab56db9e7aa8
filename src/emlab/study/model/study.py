"""`emlab reproduce` on a real chat model, resumable stage by stage.

    export OPENAI_API_KEY=...                       # the judge's key (never in a file)
    emlab reproduce configs/qwen2.5/0.5b_study.yaml

Stages, each a task of the study's graph cached by the hash of exactly what it depends on
(in `<output_dir>/stages/`, shared by every study there): the base model's answers -> judged;
fine-tunes (methods x KL off/on x seeds) -> their answers -> judged; continued training
without KL from each KL solution -> answers -> judged; parameter-space analyses of the general
(no KL) vs narrow (KL) solution of each method and seed -> report (report.md, results.json,
figures/). Changing the questions or the sampling re-samples and re-judges without
retraining; changing the judge only re-judges. Every method is checked against the model's
shapes (built on the meta device) before any stage runs; the model is loaded once, and only if
a stage runs; the judge is built only if answers need judging. Unless quiet, each finished
stage prints a line on stderr under an overall progress bar, and sampling, judging and the
analyses show their own bars.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.data.chat import read_chat_jsonl
from emlab.data.questions import Prompt
from emlab.errors import ConfigError
from emlab.generate.sampling import SamplingConfig
from emlab.judge.base import Judge
from emlab.judge.config import build_judge, load_judge_config
from emlab.models.load import load_model, model_skeleton
from emlab.runs import RunDir
from emlab.solutions import load_solution
from emlab.study.common.analyses import Analysis, compare_solutions
from emlab.study.common.config import check_methods
from emlab.study.common.graph import Task, Workers, with_needs
from emlab.study.common.keys import RunKey, analysis_stage
from emlab.study.common.logs import quiet_transformers
from emlab.study.common.stages import StageResult, cache_root
from emlab.study.model.config import ModelStudyConfig
from emlab.study.model.eval import Answers, Judged, answer, judge_answers
from emlab.study.model.inputs import (
    check_inputs,
    digest,
    narrow_split,
    pretraining_documents,
    question_prompts,
)
from emlab.study.model.report import ModelOutcome, write_model_report
from emlab.study.model.training import Trained, method_train_config
from emlab.train.loop import train

# Task costs, in training steps (a TrainTask costs its steps, twice with the KL term), for the
# overall bar's estimate of the time left. Measured on SmolLM2-135M-Instruct (float32, CPU, one
# thread, 2026-12-01): a LoRA rank-1 training step of 2 x 8 conversations of ~128 tokens (the
# shipped study recipes' batch_size 2, grad_accum 8) took 7.75 s. On a GPU decoding and judging
# weigh more against a training step than these CPU ratios say.
DECODE_STEP_COST = 0.03
"""One decoding step of a generation batch (32 answers) costs 0.03 training steps (0.23 s: the
seconds of `generate_hf` for 32 answers of 17 tokens less those for 1 token, over 16 steps)."""
JUDGMENT_COST = 0.002
"""One judgment (an answer on one metric) costs 0.002 training steps: an API judge at its default
concurrency 32 and ~0.5 s a request scores ~64 a second (0.016 s each); the judging benchmark's
loopback server (50 ms) gives 337 a second, bound by the judge's CPU."""
EVAL_PASS_COST = 0.3
"""One forward pass of an analysis over a batch of 8 conversations or text chunks under one
solution costs 0.3 training steps (2.4 s: a `LossEvaluator` pass over 8 of those conversations
under a steering vector)."""


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
                f"data.heldout_fraction {cfg.data.heldout_fraction} holds out none of the"
                f" {len(self.narrow_train)} conversations of {cfg.data.train}: raise it (the"
                " analyses need held-out narrow data)."
            )
        self.ood = read_chat_jsonl(cfg.data.ood)
        self.prompts: dict[str, list[Prompt]] = {
            "in_domain": question_prompts(cfg.in_domain_questions, cfg.samples_per_question),
            "general": question_prompts(cfg.general_questions, cfg.samples_per_question),
        }
        self.judge_config = load_judge_config(cfg.judge)
        judged = [*self.judge_config.metrics, *self.judge_config.domains]
        needed = [
            m
            for m in (
                cfg.metrics.aligned_metric,
                cfg.metrics.coherent_metric,
                cfg.metrics.domain_metric,
            )
            if m
        ]
        if missing := [m for m in needed if m not in judged]:
            raise ConfigError(
                f"metrics needs the judge metric(s) {missing}, but {cfg.judge} scores only"
                f" {judged}: add them to the judge config (`metrics:`, or `domains:` for a"
                " domain-harm metric) or change `metrics`."
            )
        data = cfg.data.model_dump(mode="json", exclude={"pretraining"}) | {
            "train": digest(cfg.data.train),
            "ood": digest(cfg.data.ood),
        }
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

    def answers(self) -> int:
        """Answers sampled per model: every prompt's samples, over both question sets."""
        return sum(p.samples for ps in self.prompts.values() for p in ps)

    def sampling(self, seed: int | None) -> SamplingConfig:
        """The generation settings; a fine-tune of seed s samples with seed + s."""
        g = self.cfg.generation
        return g if seed is None else g.model_copy(update={"seed": g.seed + seed})


@dataclass(frozen=True, eq=False)
class TrainTask(Task[Trained]):
    """Train one run from the base model; a continued run starts from `init`'s solution."""

    inputs: StudyInputs
    run_key: RunKey
    init: TrainTask | None = None
    result = Trained

    @property
    def name(self) -> str:
        return self.run_key.stage("train")

    def key(self) -> dict:
        cfg = self.inputs.cfg
        return {
            **self.inputs.data_key,
            "method": cfg.methods[self.run_key.method].run_key(self.run_key.kl),
            "kl": self.run_key.kl,
            "seed": self.run_key.seed,
            "init": self.init.key() if self.init else None,
            "steps": self.steps,
        }

    @property
    def steps(self) -> int | None:
        """`continued_steps` for a continued run, else None (the method's recipe)."""
        return self.inputs.cfg.continued_steps if self.init else None

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.init,) if self.init else ()

    @property
    def cost(self) -> float:
        return (self.steps or self.inputs.cfg.methods[self.run_key.method].recipe.steps) * (
            2 if self.run_key.kl else 1
        )

    def compute(self, folder: Path, init: Trained | None = None) -> Trained:
        model, tokenizer = self.inputs.model()
        config = method_train_config(
            self.inputs.cfg,
            self.run_key.method,
            folder,
            self.run_key.seed,
            self.run_key.kl,
            self.steps,
        )
        start = load_solution(init.solution_dir) if init else None
        result = train(
            config,
            model,
            tokenizer,
            self.inputs.narrow_train,
            self.inputs.ood if self.run_key.kl else None,
            init=start,
        )
        return Trained(
            solution_dir=str(result.run_dir / "solution"),
            norm=result.solution.norm(),
            loss=[r["loss"] for r in result.metrics if "loss" in r],
        )


@dataclass(frozen=True, eq=False)
class SampleTask(Task[Answers]):
    """Answers of the base model (`train` None) or of a run's solution to both question sets."""

    inputs: StudyInputs
    train: TrainTask | None
    result = Answers

    @property
    def name(self) -> str:
        return self.train.run_key.stage("sample") if self.train else "sample_base"

    @property
    def seed(self) -> int | None:
        return self.train.run_key.seed if self.train else None

    def key(self) -> dict:
        inputs = self.inputs
        return {
            "run": self.train.key() if self.train else inputs.data_key["model"],
            "prompts": {
                g: [(p.prompt_id, p.hash(), p.samples) for p in ps]
                for g, ps in inputs.prompts.items()
            },
            "sampling": inputs.sampling(self.seed).model_dump(mode="json", exclude={"batch_size"}),
        }

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.train,) if self.train else ()

    @property
    def cost(self) -> float:
        """DECODE_STEP_COST per decoding step: per question set, its batches of answers times
        max_new_tokens (an upper bound: a batch stops once all its answers have ended)."""
        sampling = self.inputs.sampling(self.seed)
        steps = sum(
            math.ceil(sum(p.samples for p in ps) / sampling.batch_size) * sampling.max_new_tokens
            for ps in self.inputs.prompts.values()
        )
        return DECODE_STEP_COST * steps

    def compute(self, folder: Path, trained: Trained | None = None) -> Answers:
        model, tokenizer = self.inputs.model()
        solution = load_solution(trained.solution_dir) if trained else None
        return answer(
            model,
            tokenizer,
            self.inputs.prompts,
            folder,
            self.inputs.sampling(self.seed),
            solution=solution,
            model_hash=self.inputs.cfg.model.name_or_path,
            progress=self.inputs.progress,
        )


@dataclass(frozen=True, eq=False)
class JudgeTask(Task[Judged]):
    """A sampling stage's answers, judged."""

    inputs: StudyInputs
    answers: SampleTask
    result = Judged

    @property
    def name(self) -> str:
        return "judge" + self.answers.name.removeprefix("sample")

    def key(self) -> dict:
        return {
            "answers": self.answers.key(),
            "judge": self.inputs.judge_config.model_dump(
                mode="json", exclude={"concurrency", "cache", "cache_dir"}
            ),
        }

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.answers,)

    @property
    def cost(self) -> float:
        """JUDGMENT_COST per judgment: every answer on each of the judge's metrics."""
        judge = self.inputs.judge_config
        metrics = len(dict.fromkeys([*judge.metrics, *judge.domains]))
        return JUDGMENT_COST * self.inputs.answers() * metrics

    def compute(self, folder: Path, answers: Answers) -> Judged:
        return judge_answers(answers, self.inputs.judge(), folder, progress=self.inputs.progress)


@dataclass(frozen=True, eq=False)
class AnalysisTask(Task[Analysis]):
    """Efficiency, stability and pre-training importance of one seed's general (no KL) vs narrow
    (KL) solution."""

    inputs: StudyInputs
    general: TrainTask
    narrow: TrainTask
    result = Analysis

    @property
    def name(self) -> str:
        return analysis_stage(self.general.run_key.method, self.general.run_key.seed)

    def key(self) -> dict:
        cfg = self.inputs.cfg
        return {
            "general": self.general.key(),
            "narrow": self.narrow.key(),
            "analysis": cfg.analysis.model_dump(mode="json"),
            "pretraining": [digest(p) for p in cfg.data.pretraining],
            "seed": self.general.run_key.seed,
        }

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.general, self.narrow)

    @property
    def cost(self) -> float:
        """EVAL_PASS_COST per forward pass (batch, solution), about: on the held-out batches, the
        base, 3 efficiency curves (general, narrow, random) over the multipliers and their
        equal-norm points, and 2 stability curves over eps x noise seeds; on the text batches,
        the base and 3 importance curves over the norms."""
        grid = self.inputs.cfg.analysis
        heldout = math.ceil(
            min(len(self.inputs.narrow_heldout), grid.max_heldout) / grid.batch_size
        )
        texts = math.ceil(grid.importance_documents / grid.batch_size)
        passes = heldout * (1 + 3 * (grid.multipliers + 1) + 2 * len(grid.eps) * grid.noise_seeds)
        passes += texts * (1 + 3 * len(grid.importance_fractions))
        return EVAL_PASS_COST * passes

    def compute(self, folder: Path, general: Trained, narrow: Trained) -> Analysis:
        cfg, inputs = self.inputs.cfg, self.inputs
        model, tokenizer = inputs.model()
        grid = cfg.analysis
        texts = pretraining_documents(cfg.data.pretraining, grid.importance_documents)
        return compare_solutions(
            model,
            tokenizer,
            load_solution(general.solution_dir),
            load_solution(narrow.solution_dir),
            inputs.narrow_heldout,
            texts,
            grid,
            self.general.run_key.seed,
            max_length=cfg.data.max_length,
            batch_size=grid.batch_size,
            seq_len=grid.seq_len,
            max_rows=grid.batch_size,
            progress=inputs.progress,
        )


class ModelStudyGraph:
    """The model study's tasks: the base model's answers -> judged; each run (methods x KL
    off/on x seeds, then continued runs from the KL solutions) -> its answers -> judged; each
    method and seed's pair of runs -> analysis."""

    def __init__(self, inputs: StudyInputs, root: str) -> None:
        cfg = inputs.cfg
        runs = [RunKey(m, kl, s) for m in cfg.methods for kl in (False, True) for s in cfg.seeds]
        runs += (
            [RunKey(m, False, s, continued=True) for m in cfg.methods for s in cfg.seeds]
            if cfg.continued_steps
            else []
        )
        self.train: dict[RunKey, TrainTask] = {}
        for run in runs:
            init = self.train[RunKey(run.method, True, run.seed)] if run.continued else None
            self.train[run] = TrainTask(root, inputs, run, init)
        self.base = JudgeTask(root, inputs, SampleTask(root, inputs, None))
        self.judge = {
            run: JudgeTask(root, inputs, SampleTask(root, inputs, task))
            for run, task in self.train.items()
        }
        self.analysis = {
            (m, s): AnalysisTask(
                root, inputs, self.train[RunKey(m, False, s)], self.train[RunKey(m, True, s)]
            )
            for m in cfg.methods
            for s in cfg.seeds
        }

    def tasks(self) -> list[Task]:
        """Every task of the study (those they need are added by the runner)."""
        return [self.base, *self.judge.values(), *self.analysis.values()]

    def outcome(self, results: dict[Task, StageResult]) -> ModelOutcome:
        """The tasks' results, by what they are."""
        return ModelOutcome(
            base=results[self.base],
            trained={run: results[t] for run, t in self.train.items()},
            judged={run: results[t] for run, t in self.judge.items()},
            analyses={p: results[t] for p, t in self.analysis.items()},
            stages=list(results.values()),
        )


def reproduce_model_study(
    cfg: ModelStudyConfig, source: str = "the study config", quiet: bool = False
) -> Path:
    """Run (or resume) the study; returns the run directory holding report.md and results.json.

    Raises ConfigError (a missing input, a metric the judge does not score) or ModelError (a
    method that does not fit the model, naming `methods.<name>.solution.<field>`) before any
    stage runs. Unless `quiet`, reports each finished stage and shows progress bars on stderr."""
    start = time.time()
    check_inputs(cfg, source)
    inputs = StudyInputs(cfg, progress=not quiet)
    check_methods(model_skeleton(cfg.model), cfg.methods)
    run = RunDir(cfg.output_dir, cfg.name, cfg)
    graph = ModelStudyGraph(inputs, str(cache_root(cfg.output_dir)))
    tasks = with_needs(graph.tasks())
    run.record(stages={t.name: str(t.folder()) for t in tasks})
    with quiet_transformers(), Workers(1) as workers:
        results = workers.run(tasks, "study", progress=not quiet)
    run.time_stage("stages", time.time() - start)
    write_model_report(cfg, run.path, graph.outcome(results), wall_seconds=time.time() - start)
    run.time_stage("total", time.time() - start)
    return run.path
