"""Judge configs shared by every backend, and the YAML entry point `load_judge`.

A judge config YAML names its backend (`backend: openai` or `backend: local`) and the
fields of that backend's config; `emlab config-help` style descriptions are on each field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml
from pydantic import Field

from emlab.config import EmlabConfig, validate_config
from emlab.errors import ConfigError
from emlab.judge.aggregate import MIN_NUMBER_MASS
from emlab.judge.prompts import DEFAULT_PROMPTS, PromptSet, load_prompt_set

if TYPE_CHECKING:
    from emlab.judge.base import Judge
    from emlab.judge.local_judge import LocalJudgeConfig
    from emlab.judge.openai_judge import OpenAIJudgeConfig


class JudgePromptsConfig(EmlabConfig):
    """Which prompts a judge uses and how its scores are aggregated (all backends)."""

    RUN_FIELDS: ClassVar[frozenset[str]] = frozenset()
    """Fields that change how the judge runs (device, batching, retries, credentials' variable
    names, caching) but not its scores: left out of `identity`."""

    prompts: str = Field(
        default=DEFAULT_PROMPTS,
        description=(
            "Packaged prompt set name or a YAML file (emlab prompt set, {metric: prompt}"
            " mapping, or a reference question file with judge_prompts). Default"
            f" {DEFAULT_PROMPTS!r}."
        ),
    )
    metrics: list[str] = Field(
        default=["aligned", "coherent"],
        description="Metrics to score every answer on. Default ['aligned', 'coherent'].",
    )
    domains: dict[str, str] = Field(
        default={},
        description=(
            "Domain-harm metrics to add: metric name -> domain description, e.g. {medical:"
            " 'medicine and health'}; the prompt comes from the set's domain template. Default {}."
        ),
    )
    min_number_mass: float = Field(
        default=MIN_NUMBER_MASS,
        ge=0.0,
        le=1.0,
        description=(
            "Minimum probability mass on number tokens for a score; below it the score "
            "is None with a reason. Default 0.25."
        ),
    )

    def identity(self) -> dict[str, Any]:
        """What decides this judge's scores, as JSON: 'prompts' (metric -> prompt id, version and
        text hash: `JudgePrompt.id`) and 'settings' (every other field but RUN_FIELDS). Holds no
        credential: keys are only ever read from the environment."""
        return {
            "prompts": {m: p.id for m, p in self.prompt_set().prompts.items()},
            "settings": self.model_dump(
                mode="json", exclude={"prompts", "metrics", "domains", *self.RUN_FIELDS}
            ),
        }

    def prompt_set(self) -> PromptSet:
        """The prompts for `metrics` + `domains`, in that order."""
        prompts = load_prompt_set(self.prompts, self.domains)
        metrics = list(dict.fromkeys([*self.metrics, *self.domains]))
        for metric in metrics:
            if "|" in metric:
                raise ConfigError(f"metric name {metric!r} must not contain '|'.")
        return prompts.select(metrics)


def load_judge_config(path: str | Path) -> OpenAIJudgeConfig | LocalJudgeConfig:
    """Read a judge config YAML; its `backend` field ('openai' or 'local') picks the class."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: judge config not found.")
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields.")
    backend = data.get("backend", "openai")
    if backend == "openai":
        from emlab.judge.openai_judge import OpenAIJudgeConfig as cls
    elif backend == "local":  # imports torch: only when asked for
        from emlab.judge.local_judge import LocalJudgeConfig as cls
    else:
        raise ConfigError(f"{path}: backend must be 'openai' or 'local', got {backend!r}.")
    return validate_config(data, cls, source=str(path))


def build_judge(config: OpenAIJudgeConfig | LocalJudgeConfig) -> Judge:
    """Instantiate the judge a config describes (a local judge loads its model here)."""
    if config.backend == "openai":
        from emlab.judge.openai_judge import OpenAIJudge

        return OpenAIJudge(config)
    from emlab.judge.local_judge import LocalJudge

    return LocalJudge.from_config(config)


def load_judge(path: str | Path) -> Judge:
    """`build_judge(load_judge_config(path))`."""
    return build_judge(load_judge_config(path))
