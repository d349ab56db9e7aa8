"""`emlab reproduce`: the whole study on the synthetic world, resumable stage by stage.

    emlab reproduce                       # the default world (configs/world/default.yaml)
    emlab reproduce configs/world/finance.yaml

Stages, each a task of the study's graph cached by the hash of exactly what it depends on
(in `<output_dir>/stages/`, shared by every study there): chat models of the world and of
the control world -> their evaluations, and narrow fine-tunes (methods x KL on/off x seeds)
-> the fine-tunes' sampled answers, continued training (without KL from the narrow solutions,
with KL from the general ones), and parameter-space analyses -> report. Each stage starts as soon as
the stages it needs are
done, on `workers` processes. A study that differs only in sampling (`samples_per_question`)
or the analysis grids reuses every chat model and fine-tune of an earlier one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from emlab.runs import RunDir
from emlab.study.common.analyses import Analysis
from emlab.study.common.config import check_methods
from emlab.study.common.graph import Task, Workers
from emlab.study.common.keys import RunKey, analysis_stage
from emlab.study.common.logs import quiet_transformers
from emlab.study.common.stages import StageResult, cache_root
from emlab.study.world.analyses import analyse_pair
from emlab.study.world.config import WORLDS, StudyConfig, world_config
from emlab.study.world.finetune import Trained, Tuned, finetune, sample_solution
from emlab.study.world.models import (
    ChatEval,
    ChatModel,
    build_chat_model,
    evaluate_chat_model,
    initial_model,
)
from emlab.study.world.probe import PROBE_SEED
from emlab.study.world.report import Outcome, write_report
from emlab.study.world.results import WorldRun
from emlab.study.world.sampling import Sampled
from emlab.study.world.seeds import reproduce_world_seeds
from emlab.world import build_world, world_tokenizer

ANALYSIS_COST = 150
"""An analysis costs about as much as 150 fine-tuning steps (task cost; measured on the default
world)."""
SAMPLE_COST = 10
"""Sampling a model's answers costs about as much as 10 fine-tuning steps (task cost)."""
CHAT_STEP_COST = 5
"""A pre-training or chat-tuning step costs about as much as 5 fine-tuning steps (task cost;
measured on the default world: 0.25 s vs 0.04-0.07 s on one CPU thread)."""


@dataclass(frozen=True, eq=False)
class ChatModelTask(Task[ChatModel]):
    """Pre-train and chat-tune one world's model ('world' or 'control')."""

    study: StudyConfig
    world: str
    result = ChatModel

    @property
    def name(self) -> str:
        return f"chat_model_{self.world}"

    def key(self) -> dict:
        s = self.study
        return {
            "world": world_config(s, self.world).model_dump(mode="json"),
            "model": s.model.model_dump(mode="json"),
            "pretrain": s.pretrain.model_dump(mode="json"),
            "chat_tune": s.chat_tune.model_dump(mode="json"),
        }

    @property
    def cost(self) -> float:
        return CHAT_STEP_COST * (self.study.pretrain.steps + self.study.chat_tune.steps)

    def compute(self, folder: Path) -> ChatModel:
        world = build_world(world_config(self.study, self.world))
        return build_chat_model(self.study, world, world_tokenizer(world), folder)


@dataclass(frozen=True, eq=False)
class ChatEvalTask(Task[ChatEval]):
    """A chat model's misalignment before fine-tuning, exact and sampled."""

    study: StudyConfig
    chat: ChatModelTask
    result = ChatEval

    @property
    def name(self) -> str:
        return f"chat_eval_{self.chat.world}"

    def key(self) -> dict:
        return {
            "chat_model": self.chat.key(),
            "domain": self.study.trained_domain,
            "samples": self.study.samples_per_question,
            "persona_probe": PROBE_SEED,
        }

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.chat,)

    @property
    def cost(self) -> float:
        return SAMPLE_COST

    def compute(self, folder: Path, chat: ChatModel) -> ChatEval:
        world = build_world(world_config(self.study, self.chat.world))
        return evaluate_chat_model(self.study, world, chat.model_dir, folder)


@dataclass(frozen=True, eq=False)
class TrainTask(Task[Trained]):
    """One fine-tune of the chat model of its run's world; a continued run starts from the
    solution of `init` (the same method and seed with the KL term switched)."""

    study: StudyConfig
    run_key: RunKey
    chat: ChatModelTask
    init: TrainTask | None = None
    result = Trained

    @property
    def name(self) -> str:
        return self.run_key.stage("train")

    def key(self) -> dict:
        s = self.study
        return {
            "chat_model": self.chat.key(),
            "run": self.run_key.key(),
            "method": s.methods[self.run_key.method].run_key(self.run_key.kl),
            "domain": s.trained_domain,
            "eval_every": s.eval_every,
            "continued_steps": s.continued_steps if self.init else None,
            "init": self.init.key() if self.init else None,
            **(
                {"continued_optimizer": s.continued_optimizer, "continued_decay": s.continued_decay}
                if self.init
                else {}
            ),
        }

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.chat, self.init) if self.init else (self.chat,)

    @property
    def cost(self) -> float:
        steps = (
            self.study.continued_steps
            if self.run_key.continued
            else self.study.methods[self.run_key.method].recipe.steps
        )
        return steps * (2 if self.run_key.kl else 1)

    def compute(self, folder: Path, chat: ChatModel, init: Trained | None = None) -> Trained:
        return self.compute_kept(folder, None, chat, init)[0]

    def compute_kept(
        self, folder: Path, kept: object, chat: ChatModel, init: Trained | None = None
    ) -> tuple[Trained, Tuned]:
        """The fine-tune's result, and the fine-tune in memory for its sampling stage."""
        world = build_world(world_config(self.study, self.chat.world))
        return finetune(
            self.study,
            world,
            chat.model_dir,
            self.run_key,
            folder,
            init,
        )


@dataclass(frozen=True, eq=False)
class SampleTask(Task[Sampled]):
    """A fine-tune's sampled answers, labelled by the exact judge."""

    study: StudyConfig
    train: TrainTask
    result = Sampled

    @property
    def name(self) -> str:
        return self.train.run_key.stage("sample")

    def key(self) -> dict:
        return {"trained": self.train.key(), "samples": self.study.samples_per_question}

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.train.chat, self.train)

    @property
    def follows(self) -> Task:
        return self.train

    @property
    def cost(self) -> float:
        return SAMPLE_COST

    def compute(self, folder: Path, chat: ChatModel, trained: Trained) -> Sampled:
        return self.compute_kept(folder, None, chat, trained)[0]

    def compute_kept(
        self, folder: Path, kept: object, chat: ChatModel, trained: Trained
    ) -> tuple[Sampled, None]:
        """Samples from the fine-tune its training stage kept in memory, else loaded."""
        world = build_world(world_config(self.study, self.train.chat.world))
        tuned = (
            kept if isinstance(kept, Tuned) else Tuned.load(chat.model_dir, trained.solution_dir)
        )
        return sample_solution(self.study, world, self.train.run_key, tuned, folder), None


@dataclass(frozen=True, eq=False)
class AnalysisTask(Task[Analysis]):
    """Efficiency, stability and pre-training importance of one seed's general (no KL) vs
    narrow (KL) solution in the world."""

    study: StudyConfig
    general: TrainTask
    narrow: TrainTask
    result = Analysis

    @property
    def name(self) -> str:
        return analysis_stage(self.general.run_key.method, self.general.run_key.seed)

    def key(self) -> dict:
        return {
            "general": self.general.key(),
            "narrow": self.narrow.key(),
            "analysis": self.study.analysis.model_dump(mode="json"),
        }

    @property
    def needs(self) -> tuple[Task, ...]:
        return (self.general.chat, self.general, self.narrow)

    @property
    def cost(self) -> float:
        return ANALYSIS_COST

    def compute(self, folder: Path, chat: ChatModel, general: Trained, narrow: Trained) -> Analysis:
        world = build_world(self.study.world)
        return analyse_pair(
            self.study,
            world,
            chat.model_dir,
            general.solution_dir,
            narrow.solution_dir,
            self.general.run_key.seed,
        )


def run_keys(study: StudyConfig) -> list[RunKey]:
    """Every fine-tune of the study: methods x KL off/on x seeds in the world, then the
    continued runs (each world run with its KL term switched), then the methods of `control_methods`
    without KL in the control world.
    """
    world = [
        RunKey(m, kl, s, "world")
        for m in study.methods
        for kl in (False, True)
        for s in study.seeds
    ]
    continued = (
        [
            RunKey(m, kl, s, "world", continued=True)
            for m in study.methods
            for kl in (False, True)
            for s in study.seeds
        ]
        if study.continued_steps
        else []
    )
    control = [RunKey(m, False, s, "control") for m in study.control_methods for s in study.seeds]
    return world + continued + control


class StudyGraph:
    """The world study's tasks: chat model -> its evaluation and its world's fine-tunes ->
    each fine-tune's samples, continued training (KL switched), and (both runs of a method and
    seed) analysis."""

    def __init__(self, study: StudyConfig, root: str) -> None:
        self.study = study
        self.chat = {w: ChatModelTask(root, study, w) for w in WORLDS}
        self.chat_eval = {w: ChatEvalTask(root, study, self.chat[w]) for w in WORLDS}
        self.train: dict[RunKey, TrainTask] = {}
        for run in run_keys(study):
            init = (
                self.train[RunKey(run.method, not run.kl, run.seed, run.world)]
                if run.continued
                else None
            )
            self.train[run] = TrainTask(root, study, run, self.chat[run.world], init)
        self.sample = {run: SampleTask(root, study, task) for run, task in self.train.items()}
        self.analysis = {
            (m, s): AnalysisTask(
                root,
                study,
                self.train[RunKey(m, False, s, "world")],
                self.train[RunKey(m, True, s, "world")],
            )
            for m in study.methods
            for s in study.seeds
        }

    def tasks(self) -> list[Task]:
        """Every task of the study."""
        return [
            *self.chat.values(),
            *self.chat_eval.values(),
            *self.train.values(),
            *self.sample.values(),
            *self.analysis.values(),
        ]

    def outcome(self, results: dict[Task, StageResult]) -> Outcome:
        """The tasks' results, by what they are."""
        return Outcome(
            chat_models={w: results[t] for w, t in self.chat.items()},
            chat_evals={w: results[t] for w, t in self.chat_eval.items()},
            runs={
                run: WorldRun(run, results[t], results[self.sample[run]])
                for run, t in self.train.items()
            },
            analyses={p: results[t] for p, t in self.analysis.items()},
            stages=[results[t] for t in self.tasks()],
        )


def reproduce(study: StudyConfig, quiet: bool = False) -> Path:
    """Run (or resume) the study; returns the run directory holding report.md and results.json.
    Shows a progress bar and a line per finished stage on stderr unless `quiet`. A method that
    does not fit the world's model stops it before any stage runs (ModelError naming the field).
    With `world_seeds`, runs it once per world seed and returns the side-by-side report's folder."""
    if study.world_seeds:
        return reproduce_world_seeds(study, lambda one: reproduce(one, quiet))
    start = time.time()
    with (
        quiet_transformers(),
        Workers(study.workers) as workers,
    ):  # forks first: no torch or tokenizer work may precede it
        with torch.device("meta"):
            check_methods(
                initial_model(study, world_tokenizer(build_world(study.world))), study.methods
            )
        run = RunDir(study.output_dir, study.name, study)
        graph = StudyGraph(study, str(cache_root(study.output_dir)))
        run.record(stages={t.name: str(t.folder()) for t in graph.tasks()})
        results = workers.run(graph.tasks(), "study", progress=not quiet)
    run.time_stage("tasks", time.time() - start)
    write_report(study, run.path, graph.outcome(results), wall_seconds=time.time() - start)
    run.time_stage("total", time.time() - start)
    return run.path
