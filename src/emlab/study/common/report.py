"""Report pieces both studies share: stage counts, a rate with its CI, the analyses section and
figures."""

from __future__ import annotations

from pathlib import Path

from emlab.study.common.analyses import Analysis
from emlab.study.common.figures import plot_efficiency, plot_importance, plot_stability
from emlab.study.common.stages import StageResult


def stage_counts(stages: list[StageResult], wall_seconds: float) -> dict[str, float]:
    """wall_seconds and how many stages were computed or reused (and their computed time)."""
    return {
        "wall_seconds": wall_seconds,
        "stages_reused": sum(r.reused for r in stages),
        "stages_computed": sum(not r.reused for r in stages),
        "stage_seconds_total": sum(r.stage_seconds for r in stages),
    }


def percent_ci(block: dict, key: str) -> str:
    """'12.5% [3.1, 25.0]': the rate `key` of a results block with its CI, in percent."""
    return (
        f"{100 * block[key]:.1f}% [{100 * block[key + '_ci_low']:.1f},"
        f" {100 * block[key + '_ci_high']:.1f}]"
    )


def analysis_figures(analyses: dict[str, list[Analysis]], folder: Path) -> dict[str, Path]:
    """The efficiency, stability and importance figures (title -> PNG path) of the analyses per
    method and seed."""
    per_method = {
        method: [a.figure_data() for a in per_seed] for method, per_seed in analyses.items()
    }
    return {
        "Efficiency: loss vs norm": plot_efficiency(per_method, folder / "efficiency.png"),
        "Stability: loss under orthogonal noise": plot_stability(
            per_method, folder / "stability.png"
        ),
        "Pre-training importance: KL vs norm": plot_importance(
            per_method, folder / "importance.png"
        ),
    }


def analyses_markdown(analyses: dict[str, dict]) -> list[str]:
    """The report's section comparing general (no KL) and narrow (KL) solutions, one row per
    method."""
    lines = [
        "## General (no KL) vs narrow (KL) solutions",
        "",
        (
            "Mean [95% CI] over seeds. Loss: held-out narrow data, assistant tokens. Equal norm:"
            " each solution rescaled to the general solution's norm. Stability: relative loss"
            " increase (L_pert - L)/(L_base - L) at ε = 0.5. Importance: KL(base || tuned) on"
            " pre-training documents at the general solution's norm."
        ),
        "",
        (
            "| method | norm general / narrow | loss at equal norm: general / narrow / random |"
            " relative loss increase at ε=0.5: general / narrow | KL on pre-training text: general"
            " / narrow / random |"
        ),
        "|---|---|---|---|---|",
    ]
    for method, a in analyses.items():
        f = lambda k, a=a: f"{a[k]['mean']:.3g} [{a[k]['ci_low']:.3g}, {a[k]['ci_high']:.3g}]"  # noqa: E731
        lines.append(
            f"| {method} | {a['norm_general']['mean']:.3g} / {a['norm_narrow']['mean']:.3g} |"
            f" {f('loss_at_general_norm_general')} / {f('loss_at_general_norm_narrow')} /"
            f" {f('loss_at_general_norm_random')} | {f('relative_loss_increase_eps_0.5_general')} /"
            f" {f('relative_loss_increase_eps_0.5_narrow')} | {f('kl_at_general_norm_general')} /"
            f" {f('kl_at_general_norm_narrow')} / {f('kl_at_general_norm_random')} |"
        )
    return lines


def figures_markdown(figures: dict[str, Path]) -> list[str]:
    """A "Figures" section embedding each figure (paths relative to the report)."""
    lines = ["", "## Figures", ""]
    for title, path in figures.items():
        lines += [f"### {title}", "", f"![{title}]({path})", ""]
    return lines
