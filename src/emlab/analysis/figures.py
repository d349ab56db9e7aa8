"""Paper-quality figures of the analyses: per result, a `*_figure` that draws it (a
`matplotlib.figure.Figure`, see `emlab.report.figures`) and a `plot_*` that writes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from emlab.analysis.efficiency import EfficiencyResult
from emlab.analysis.importance import ImportanceResult
from emlab.analysis.stability import StabilityResult
from emlab.report.figures import NORM_LABEL, colour, new_figure, save


def efficiency_figure(result: EfficiencyResult) -> Figure:
    """Loss vs solution norm per solution; stars at m = 1, circles at the loss minima."""
    fig, ax = new_figure()
    for i, c in enumerate(result.curves):
        color = colour(c.name, i)
        ax.plot(
            c.norms, c.losses, "-", color=color, label=f"{c.name} ($\\|\\theta\\|$ = {c.norm:.3g})"
        )
        ax.plot([c.norm], [c.loss_at_one], "*", color=color, markersize=11)
        j = c.min_index
        ax.plot([c.norms[j]], [c.losses[j]], "o", mfc="none", color=color, markersize=8)
    ax.axhline(result.base_loss, color="black", linestyle=":", linewidth=1, label="base model")
    ax.set_xlabel(NORM_LABEL)
    ax.set_ylabel("loss on narrow data (nats / token)")
    ax.set_title(r"Efficiency (★ trained, ○ minimum)")
    ax.legend(frameon=False, fontsize=8)
    return fig


def stability_figure(result: StabilityResult) -> Figure:
    """Relative loss increase vs noise fraction eps: mean over seeds with a 95% CI band."""
    fig, ax = new_figure()
    for i, c in enumerate(result.curves):
        s, color = c.summary, colour(c.name, i)
        ax.plot(
            c.eps, s.mean, "o-", color=color, markersize=3, label=f"{c.name} ({len(c.seeds)} seeds)"
        )
        ax.fill_between(c.eps, s.ci_low, s.ci_high, color=color, alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel(r"noise fraction $\varepsilon$ (orthogonal, same norm)")
    ax.set_ylabel(r"$(L_{pert} - L) / (L_{base} - L)$")
    ax.set_title("Stability (mean, 95% CI over seeds)")
    ax.legend(frameon=False, fontsize=8)
    return fig


def importance_figure(result: ImportanceResult) -> Figure:
    """KL(base || steered) on pre-training text vs norm, with a 95% CI band where seeds repeat."""
    fig, ax = new_figure()
    for i, name in enumerate(result.kl):
        s, color = result.summary(name), colour(name, i)
        rows = len(result.kl[name])
        ax.plot(
            result.norms,
            s.mean,
            "o-",
            color=color,
            markersize=3,
            label=name if rows == 1 else f"{name} ({rows} seeds)",
        )
        if rows > 1:
            ax.fill_between(result.norms, s.ci_low, s.ci_high, color=color, alpha=0.2, linewidth=0)
    for i, (name, norm) in enumerate(result.solution_norms.items()):
        ax.axvline(norm, color=colour(name, i), linestyle=":", linewidth=1)
    ax.set_xlabel(NORM_LABEL)
    ax.set_ylabel("KL(base ‖ steered) on text (nats / token)")
    ax.set_title("Pre-training importance (dotted: trained norms)")
    ax.legend(frameon=False, fontsize=8)
    return fig


def cosines_figure(
    matrix: torch.Tensor, labels: list[str], title: str = "Cosine similarity"
) -> Figure:
    """Heat map of a cosine-similarity matrix # (N, N) with labelled rows and columns."""
    values = np.asarray(matrix, dtype=float)
    fig, ax = new_figure(1.0 + 0.45 * len(labels), 0.6 + 0.45 * len(labels))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_title(title)
    return fig


def plot_efficiency(result: EfficiencyResult, path: str | Path) -> Path:
    """Write `efficiency_figure(result)` to `path`."""
    return save(efficiency_figure(result), path)


def plot_stability(result: StabilityResult, path: str | Path) -> Path:
    """Write `stability_figure(result)` to `path`."""
    return save(stability_figure(result), path)


def plot_importance(result: ImportanceResult, path: str | Path) -> Path:
    """Write `importance_figure(result)` to `path`."""
    return save(importance_figure(result), path)


def plot_cosines(
    matrix: torch.Tensor, labels: list[str], path: str | Path, title: str = "Cosine similarity"
) -> Path:
    """Write `cosines_figure(matrix, labels, title)` to `path`."""
    return save(cosines_figure(matrix, labels, title), path)
