"""The real-model study's report: results.json (same layout as the world study's, under
`model` and `base_model`), report.md (headline table, analyses) and figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emlab.io import write_json_atomic, write_text_atomic
from emlab.study.common.analyses import Analysis
from emlab.study.common.keys import CONDITIONS, RunKey
from emlab.study.common.report import (
    analyses_markdown,
    analysis_figures,
    figures_markdown,
    percent_ci,
    stage_counts,
)
from emlab.study.common.results import analysis_summary
from emlab.study.common.stages import StageResult
from emlab.study.model.config import ModelStudyConfig
from emlab.study.model.eval import Judged, group_rates
from emlab.study.model.training import Trained


@dataclass(frozen=True)
class ModelOutcome:
    """What the model study's stages produced: the base model's judged answers, every run's
    training and judged answers, the analyses by (method, seed), and every stage (for the counts).
    """

    base: Judged
    trained: dict[RunKey, Trained]
    judged: dict[RunKey, Judged]
    analyses: dict[tuple[str, int], Analysis]
    stages: list[StageResult]


def build_model_results(cfg: ModelStudyConfig, outcome: ModelOutcome, wall_seconds: float) -> dict:
    """results.json: model.M.{no_kl,kl,continued}, base_model, analyses, config, wall_seconds. Every
    rate is computed here from the judgment files the evaluation stages wrote."""
    results: dict = {"model": {}, "analyses": {}}
    for method in cfg.methods:
        for cond in CONDITIONS:
            keys = [RunKey.of(method, cond, s) for s in cfg.seeds]
            if runs := [(k.seed, outcome.judged[k]) for k in keys if k in outcome.judged]:
                block = group_rates(runs, cfg.metrics)
                block["norm"] = float(
                    np.mean([outcome.trained[k].norm for k in keys if k in outcome.trained])
                )
                results["model"].setdefault(method, {})[cond] = block
        results["analyses"][method] = analysis_summary(
            [outcome.analyses[(method, s)] for s in cfg.seeds]
        )
    rates = group_rates([(None, outcome.base)], cfg.metrics)
    results["base_model"] = {
        "misaligned_rate": rates["ood_rate"],
        "misaligned_rate_ci_low": rates["ood_rate_ci_low"],
        "misaligned_rate_ci_high": rates["ood_rate_ci_high"],
        **rates,
    }
    m = cfg.metrics
    results["config"] = {
        "model": cfg.model.name_or_path,
        "seeds": cfg.seeds,
        "samples_per_question": cfg.samples_per_question,
        "judge": cfg.judge,
        "em_rule": (
            f"{m.aligned_metric} <= {m.aligned_threshold:g} and {m.coherent_metric} >"
            f" {m.coherent_threshold:g}, denominator {m.denominator}, per question then averaged"
        ),
        "in_domain_rule": (
            f"{m.domain_metric} {'>=' if m.domain_direction == 'high_is_bad' else '<='}"
            f" {m.domain_threshold:g} and coherent"
            if m.domain_metric
            else "the EM rule"
        ),
        "ci": f"{100 * m.ci:g}% percentile bootstrap over seeds (over samples with one seed)",
    }
    results |= stage_counts(outcome.stages, wall_seconds)
    return results


def write_model_report(
    cfg: ModelStudyConfig, out: Path, outcome: ModelOutcome, wall_seconds: float
) -> dict:
    """Write results.json, report.md and figures/*.png into `out`; returns the results."""
    results = build_model_results(cfg, outcome, wall_seconds)
    write_json_atomic(out / "results.json", results)
    per_method = {m: [outcome.analyses[(m, s)] for s in cfg.seeds] for m in cfg.methods}
    paths = analysis_figures(per_method, out / "figures")
    write_text_atomic(
        out / "report.md",
        render_model_markdown(cfg, results, {k: p.relative_to(out) for k, p in paths.items()}),
    )
    return results


def _rate(block: dict, key: str) -> str:
    return (
        "n/a"
        if block.get(key) is None or block.get(f"{key}_ci_low") is None
        else percent_ci(block, key)
    )


def _row(name: str, cond: str, block: dict) -> str:
    incoherent = block["ood_incoherent_rate"]
    return (
        f"| {name} | {cond} | {_rate(block, 'in_domain_rate')} | {_rate(block, 'ood_rate')} |"
        f" {'n/a' if incoherent is None else f'{100 * incoherent:.1f}%'} | {block['ood_n_answers']}"
        f" | {block['in_domain_n_judge_errors'] + block['ood_n_judge_errors']} |"
    )


def render_model_markdown(cfg: ModelStudyConfig, results: dict, figures: dict[str, Path]) -> str:
    """The report's Markdown: headline table, analyses, figures."""
    c = results["config"]
    lines = [
        f"# emlab model study: {cfg.model.name_or_path}",
        "",
        (
            f"Narrow fine-tuning on `{cfg.data.train}`, without and with the KL term on"
            f" `{cfg.data.ood}`; {len(cfg.seeds)} seeds ({', '.join(map(str, cfg.seeds))});"
            f" {cfg.samples_per_question} answers per question (in-domain:"
            f" `{cfg.in_domain_questions}`, general: `{cfg.general_questions}`), judged with"
            f" `{cfg.judge}`. EM: {c['em_rule']}; in-domain: {c['in_domain_rule']}. [{c['ci']}]."
            f" Wall time of this run: {results['wall_seconds']:.0f} s ({results['stages_computed']}"
            f" stages computed, {results['stages_reused']} reused;"
            f" {results['stage_seconds_total']:.0f} s of stage time when computed)."
        ),
        "",
        "## Headline",
        "",
        (
            "| method | KL | in-domain misaligned | general EM | general incoherent | general"
            " answers | judge errors |"
        ),
        "|---|---|---|---|---|---|---|",
        _row("base model", "-", results["base_model"]),
    ]
    for method, conds in results["model"].items():
        lines += [_row(method, cond, block) for cond, block in conds.items()]
    lines += [
        "",
        (
            "`continued`: training without KL, starting from the KL (narrow) solution. Judge errors"
            " are excluded from the rates."
        ),
        "",
    ]
    lines += analyses_markdown(results["analyses"])
    lines += figures_markdown(figures)
    return "\n".join(lines) + "\n"
