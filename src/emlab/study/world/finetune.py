"""One narrow fine-tuning run of the study: train on the trained domain's bad answers (with or
without KL on the other domains), tracking exact misalignment over steps, then evaluate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from emlab.models.config import ModelConfig
from emlab.models.load import load_model
from emlab.solutions import load_solution
from emlab.study.config import MethodConfig, StudyConfig
from emlab.study.sampling import world_sample_rates
from emlab.study.world_eval import ExactEvaluator
from emlab.study.world_models import recipe_config
from emlab.train.loop import train
from emlab.train.trainable import check_solution_config
from emlab.world import World, narrow_conversations, ood_conversations


@dataclass(frozen=True)
class FinetuneJob:
    """Which run: world ('world' or 'control'), method name, KL on/off, seed, and an optional
    solution folder to continue from (continued training without KL)."""

    world: str
    method: str
    kl: bool
    seed: int
    init: str | None = None
    steps: int | None = None

    @property
    def label(self) -> str:
        """e.g. 'world/lora_r1/kl/seed0' (+ '/continued')."""
        tail = "/continued" if self.init else ""
        return f"{self.world}/{self.method}/{'kl' if self.kl else 'no_kl'}/seed{self.seed}{tail}"

    def key(self) -> dict:
        return asdict(self)


def check_methods(model: nn.Module, methods: Mapping[str, MethodConfig]) -> None:
    """Raise a ModelError naming `methods.<name>.solution.<field>` when a method's solution does
    not fit `model` (e.g. a layer past its last one), so that a study stops before any stage runs.
    `model` may be on the meta device."""
    for name, method in methods.items():
        check_solution_config(model, method.solution, f"methods.{name}.solution")


_EVALUATORS: dict[tuple[str, str, str], ExactEvaluator] = {}


def exact_evaluator(world: World, tokenizer: PreTrainedTokenizerBase, domain: str, model_dir: str) -> ExactEvaluator:
    """The ExactEvaluator of this world, domain and chat model, tokenised once per process
    (a worker runs many fine-tunes of the same chat model)."""
    key = (model_dir, world.config.model_dump_json(), domain)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = ExactEvaluator(world, tokenizer, domain)
    return _EVALUATORS[key]


def finetune(study: StudyConfig, world: World, model_dir: str, job: FinetuneJob, folder: Path) -> dict:
    """Run `job` in `folder`; returns exact rates over steps and at the end, and the sampled
    labels and rates of the solution."""
    method = study.methods[job.method]
    model, tokenizer = load_model(ModelConfig(name_or_path=model_dir))
    domain = study.trained_domain
    evaluator = exact_evaluator(world, tokenizer, domain, model_dir)
    recipe = method.recipe if job.steps is None else method.recipe.model_copy(update={"steps": job.steps})
    config = recipe_config(
        "finetune",
        folder,
        recipe,
        job.seed,
        solution=method.solution.model_dump(),
        kl={"weight": method.kl_weight if job.kl else 0.0},
        eval_every=study.eval_every,
        data={"max_length": study.model.max_positions},
    )
    result = train(
        config,
        model,
        tokenizer,
        narrow_conversations(world, domain),
        ood_conversations(world, exclude_domain=domain) if job.kl else None,
        init=load_solution(job.init) if job.init else None,
        evaluator=evaluator,
    )
    last = result.metrics[-1]
    final = {k: v for k, v in last.items() if k.startswith("p_")} if "p_bad_ood" in last else evaluator(result.model, result.solution)
    sampled = world_sample_rates(
        result.model, tokenizer, world, domain, study.samples_per_question, job.seed + 1000, folder / "samples.jsonl", result.solution
    )
    return {
        "sampled": sampled["rates"],
        "samples": sampled["rows"],
        "job": job.key(),
        "solution_dir": str(result.run_dir / "solution"),
        "norm": result.solution.norm(),
        "exact": final,
        "curve": [
            {k: row[k] for k in ("step", "p_bad_in_domain", "p_bad_ood", "sft", "kl") if k in row}
            for row in result.metrics
            if "p_bad_in_domain" in row
        ],
    }
