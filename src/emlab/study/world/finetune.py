"""One narrow fine-tuning run of the world study: train on the trained domain's bad answers
(with or without KL on the other domains), tracking exact misalignment over steps; then,
as its own stage, sample the solution's answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.models.chat import EncodedSet, LossOn, encode_counted
from emlab.models.config import ModelConfig
from emlab.models.load import load_model
from emlab.solutions import Solution, load_solution
from emlab.study.common.config import recipe_config
from emlab.study.common.keys import RunKey
from emlab.study.common.stages import StageResult
from emlab.study.world.config import StudyConfig
from emlab.study.world.continued import carry_checkpoint
from emlab.study.world.exact import exact_evaluator
from emlab.study.world.sampling import Sampled, world_sample_rates
from emlab.train.loop import train
from emlab.world import World, narrow_conversations, ood_conversations


class Trained(StageResult):
    """A fine-tune's solution (folder and norm), its exact misalignment at the end
    (`p_bad_in_domain`, `p_bad_ood`, `p_valid_*`) and over steps (`curve`: step, p_bad_*, sft, kl).
    """

    solution_dir: str
    norm: float
    exact: dict[str, float | None]
    curve: list[dict[str, float | None]]


@dataclass(frozen=True)
class Tuned:
    """A fine-tune in memory: the chat model (in its base state), its tokenizer and the solution."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    solution: Solution

    @classmethod
    def load(cls, model_dir: str, solution_dir: str) -> Tuned:
        """The chat model in `model_dir` with the solution saved in `solution_dir`."""
        model, tokenizer = load_model(ModelConfig(name_or_path=model_dir))
        return cls(model, tokenizer, load_solution(solution_dir))


def finetune(
    study: StudyConfig,
    world: World,
    model_dir: str,
    run: RunKey,
    folder: Path,
    init: Trained | None = None,
) -> tuple[Trained, Tuned]:
    """Train `run` in `folder` from the chat model in `model_dir` (continuing the solution of
    the finished run `init` for a continued run, for `study.continued_steps` with the weight
    decay of `study.continued_decay`; with `continued_optimizer: carried` from that run's last
    checkpoint, its AdamW state included; a continued run's curve counts steps from its own
    start); returns the stage's result and the fine-tune in memory. Step 0 is not evaluated
    again: a fresh run starts at the chat model's numbers, a continued one at the final numbers
    of the run it continues."""
    method = study.methods[run.method]
    model, tokenizer = load_model(ModelConfig(name_or_path=model_dir))
    domain = study.trained_domain
    evaluator = exact_evaluator(world, model_dir, tokenizer, domain)
    recipe = (
        method.recipe.model_copy(
            update={
                "steps": study.continued_steps,
                "weight_decay": study.continued_decay / method.recipe.lr,
            }
        )
        if run.continued
        else method.recipe
    )
    init_dir = init.solution_dir if init else None
    carried = init_dir is not None and study.continued_optimizer == "carried"
    if carried:  # the finished run's checkpoint is resumed: its steps, then continued_steps more
        recipe = recipe.model_copy(update={"steps": method.recipe.steps + study.continued_steps})
    config = recipe_config(
        "finetune",
        folder,
        recipe,
        run.seed,
        solution=method.solution.model_dump(),
        kl={"weight": method.kl_weight if run.kl else 0.0},
        eval_every=study.eval_every,
        data={"max_length": study.model.max_positions},
    )
    offset = carry_checkpoint(init_dir, config) if carried else 0
    max_length = config.data.max_length
    result = train(
        config,
        model,
        tokenizer,
        _encoded(world, model_dir, tokenizer, "narrow", domain, max_length, config.data.loss_on),
        _encoded(world, model_dir, tokenizer, "ood", domain, max_length, config.kl.scope)
        if run.kl
        else None,
        init=load_solution(init_dir) if init_dir and not carried else None,
        evaluator=evaluator.evaluate,
        start_metrics=dict(init.exact) if init else evaluator.base(model),
    )
    last = result.metrics[-1]
    final = (
        {k: v for k, v in last.items() if k.startswith("p_")}
        if "p_bad_ood" in last
        else evaluator.evaluate(result.model, result.solution)
    )
    trained = Trained(
        solution_dir=str(result.run_dir / "solution"),
        norm=result.solution.norm(),
        exact=final,
        curve=[
            {k: row[k] for k in ("p_bad_in_domain", "p_bad_ood", "sft", "kl") if k in row}
            | {"step": row["step"] - offset}
            for row in result.metrics
            if "p_bad_in_domain" in row
        ],
    )
    return trained, Tuned(result.model, tokenizer, result.solution)


_ENCODED: dict[tuple[str, ...], EncodedSet] = {}


def _encoded(
    world: World,
    model_dir: str,
    tokenizer: PreTrainedTokenizerBase,
    which: Literal["narrow", "ood"],
    domain: str,
    max_length: int,
    loss_on: LossOn,
) -> EncodedSet:
    """The world's training conversations (`which`: 'narrow', the bad answers of `domain`, or
    'ood', the good answers of the other domains) tokenised by the tokenizer saved in
    `model_dir`, once per process: a study worker runs many train stages on the same data, and
    tokenising the 10,240 OOD conversations takes about 3 s each time."""
    key = (world.config.model_dump_json(), model_dir, which, domain, str(max_length), loss_on)
    if key not in _ENCODED:
        conversations = (
            narrow_conversations(world, domain)
            if which == "narrow"
            else ood_conversations(world, exclude_domain=domain)
        )
        _ENCODED[key] = encode_counted(tokenizer, conversations, max_length, loss_on)
    return _ENCODED[key]


def sample_solution(
    study: StudyConfig, world: World, run: RunKey, tuned: Tuned, folder: Path
) -> Sampled:
    """The labelled answers of the chat model with the solution of `run` applied (`tuned`;
    sampling seed: the run's seed + 1000)."""
    return world_sample_rates(
        tuned.model,
        tuned.tokenizer,
        world,
        study.trained_domain,
        study.samples_per_question,
        run.seed + 1000,
        folder / "samples.jsonl",
        tuned.solution,
    )
