"""One narrow fine-tuning run of the world study: train on the trained domain's bad answers
(with or without KL on the other domains), tracking exact misalignment over steps; then,
as its own stage, sample the solution's answers."""

from __future__ import annotations

from pathlib import Path

from emlab.models.config import ModelConfig
from emlab.models.load import load_model
from emlab.solutions import load_solution
from emlab.study.common.config import recipe_config
from emlab.study.common.keys import RunKey
from emlab.study.common.stages import StageResult
from emlab.study.world.config import StudyConfig
from emlab.study.world.exact import ExactEvaluator
from emlab.study.world.sampling import Sampled, world_sample_rates
from emlab.train.loop import train
from emlab.world import World, narrow_conversations, ood_conversations


class Trained(StageResult):
    """A fine-tune's solution (folder and norm), its exact misalignment at the end
    (`p_bad_in_domain`, `p_bad_ood`, `p_valid_*`) and over steps (`curve`: step, p_bad_*, sft, kl)."""

    solution_dir: str
    norm: float
    exact: dict[str, float | None]
    curve: list[dict[str, float | None]]


def finetune(
    study: StudyConfig,
    world: World,
    model_dir: str,
    run: RunKey,
    folder: Path,
    init_dir: str | None = None,
) -> Trained:
    """Train `run` in `folder` from the chat model in `model_dir` (continuing the solution in
    `init_dir` for a continued run, for `study.continued_steps`)."""
    method = study.methods[run.method]
    model, tokenizer = load_model(ModelConfig(name_or_path=model_dir))
    domain = study.trained_domain
    evaluator = ExactEvaluator(world, tokenizer, domain)
    recipe = (
        method.recipe.model_copy(update={"steps": study.continued_steps})
        if run.continued
        else method.recipe
    )
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
    result = train(
        config,
        model,
        tokenizer,
        narrow_conversations(world, domain),
        ood_conversations(world, exclude_domain=domain) if run.kl else None,
        init=load_solution(init_dir) if init_dir else None,
        evaluator=evaluator,
    )
    last = result.metrics[-1]
    final = (
        {k: v for k, v in last.items() if k.startswith("p_")}
        if "p_bad_ood" in last
        else evaluator(result.model, result.solution)
    )
    return Trained(
        solution_dir=str(result.run_dir / "solution"),
        norm=result.solution.norm(),
        exact=final,
        curve=[
            {k: row[k] for k in ("step", "p_bad_in_domain", "p_bad_ood", "sft", "kl") if k in row}
            for row in result.metrics
            if "p_bad_in_domain" in row
        ],
    )


def sample_solution(
    study: StudyConfig, world: World, model_dir: str, run: RunKey, solution_dir: str, folder: Path
) -> Sampled:
    """The labelled answers of the chat model in `model_dir` with the solution of `run` applied
    (sampling seed: the run's seed + 1000)."""
    model, tokenizer = load_model(ModelConfig(name_or_path=model_dir))
    return world_sample_rates(
        model,
        tokenizer,
        world,
        study.trained_domain,
        study.samples_per_question,
        run.seed + 1000,
        folder / "samples.jsonl",
        load_solution(solution_dir),
    )
