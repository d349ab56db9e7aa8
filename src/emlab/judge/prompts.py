"""Judge prompts: emlab's own (versioned, packaged) and loaders for user / reference prompt files.

A prompt is a template with `{question}` and `{answer}` placeholders. Its identity is its
version plus a sha256 of its text; both go into every Judgment's `judge` id, so scores from
different wordings are never mixed silently.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from emlab.errors import ConfigError

DEFAULT_PROMPTS = "emlab-v1"
"""The packaged prompt set used when a judge config names none."""

_PLACEHOLDER = re.compile(r"\{(question|answer)\}")


class JudgePrompt(BaseModel):
    """One metric's prompt template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description="Metric name, e.g. 'aligned'.")
    template: str = Field(description="Prompt text with {question} and {answer} placeholders.")
    version: str = Field(description="Version of the prompt set this prompt belongs to.")

    @property
    def hash(self) -> str:
        """First 12 hex digits of the sha256 of the template text."""
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()[:12]

    @property
    def id(self) -> str:
        """'<version>/<metric>@<hash>': the prompt's part of a judge id."""
        return f"{self.version}/{self.metric}@{self.hash}"

    def render(self, question: str, answer: str) -> str:
        """Fill the placeholders in one pass (text inside the answer is never substituted)."""
        values = {"question": question, "answer": answer}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.template)


class PromptSet(BaseModel):
    """Prompts for a set of metrics, under one version string."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    prompts: dict[str, JudgePrompt]

    def select(self, metrics: list[str] | tuple[str, ...]) -> PromptSet:
        """The subset for `metrics`; an unknown metric is a ConfigError listing the known ones."""
        missing = [m for m in metrics if m not in self.prompts]
        if missing:
            raise ConfigError(
                f"prompt set {self.version!r} has no prompt for metric(s) {missing}; it has "
                f"{sorted(self.prompts)}. Add a prompt, or a `domains` entry for a domain metric."
            )
        return PromptSet(version=self.version, prompts={m: self.prompts[m] for m in metrics})


def prompts_from_dict(mapping: dict[str, str], version: str) -> PromptSet:
    """A prompt set from a {metric: template} dict (the reference's `judge_prompts` format)."""
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(
            f"judge prompts ({version}): expected a non-empty mapping metric -> prompt text."
        )
    prompts = {}
    for metric, template in mapping.items():
        if not isinstance(template, str):
            raise ConfigError(
                f"judge prompt {metric!r} ({version}): expected text, got"
                f" {type(template).__name__}."
            )
        _check_template(str(metric), template, version)
        prompts[str(metric)] = JudgePrompt(metric=str(metric), template=template, version=version)
    return PromptSet(version=version, prompts=prompts)


def load_prompt_set(
    name_or_path: str | Path = DEFAULT_PROMPTS, domains: dict[str, str] | None = None
) -> PromptSet:
    """Load a packaged set by name ('emlab-v1') or a YAML file, adding one prompt per domain metric.

    A file may be an emlab prompt set (`version`, `prompts`, optional `domain_template`), a
    plain {metric: prompt} mapping, or a reference question file (a list of entries with
    `judge_prompts`; entries must agree on each metric's prompt). `domains` maps a domain
    metric name to the domain's description (e.g. {"medical": "medicine and health"}) and
    needs a `domain_template` with a `{domain}` placeholder.
    """
    data, source = _read(name_or_path)
    if isinstance(data, list):
        data = _merge_question_file_prompts(data, source)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a prompt set mapping or a list of questions, got"
            f" {type(data).__name__}."
        )
    if "prompts" in data:
        unknown = set(data) - {"version", "prompts", "domain_template"}
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {sorted(unknown)}; allowed: version, prompts,"
                " domain_template."
            )
        version = str(data.get("version") or Path(str(source)).stem)
        mapping = dict(data["prompts"])
        domain_template = data.get("domain_template")
    else:
        version, mapping, domain_template = Path(str(source)).stem, data, None
    for metric, description in (domains or {}).items():
        if domain_template is None:
            raise ConfigError(
                f"{source}: has no `domain_template`, so domain metric {metric!r} has no prompt. "
                f"Use the packaged set {DEFAULT_PROMPTS!r} or add the metric's prompt to the file."
            )
        if "{domain}" not in domain_template:
            raise ConfigError(f"{source}: `domain_template` needs a {{domain}} placeholder.")
        mapping[metric] = domain_template.replace("{domain}", description)
    return prompts_from_dict(mapping, version)


def _read(name_or_path: str | Path) -> tuple[Any, str]:
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        packaged = resources.files("emlab.judge") / "prompts" / f"{name_or_path}.yaml"
        if not packaged.is_file():
            known = sorted(
                p.name[:-5]
                for p in (resources.files("emlab.judge") / "prompts").iterdir()
                if p.name.endswith(".yaml")
            )
            raise ConfigError(
                f"unknown prompt set {str(name_or_path)!r}: packaged sets are {known}, or give a"
                " YAML path."
            )
        return yaml.safe_load(packaged.read_text(encoding="utf-8")), str(name_or_path)
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found.")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")), str(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}).") from None


def _merge_question_file_prompts(entries: list[Any], source: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for i, entry in enumerate(entries):
        prompts = entry.get("judge_prompts") if isinstance(entry, dict) else None
        for metric, text in (prompts or {}).items():
            if metric in merged and merged[metric] != text:
                raise ConfigError(
                    f"{source}: entry {i} ({entry.get('id')!r}) has a different {metric!r} prompt"
                    " than an earlier entry; emlab uses one prompt per metric. Split the file by"
                    " prompt."
                )
            merged[metric] = text
    if not merged:
        raise ConfigError(f"{source}: no entry has `judge_prompts`.")
    return merged


def _check_template(metric: str, template: str, version: str) -> None:
    missing = [p for p in ("{question}", "{answer}") if p not in template]
    if missing:
        raise ConfigError(f"judge prompt {metric!r} ({version}) lacks placeholder(s) {missing}.")
