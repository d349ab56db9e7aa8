"""Paper-quality figures of the analyses (matplotlib, Agg backend): one function per result."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from emlab.analysis.efficiency import EfficiencyResult  # noqa: E402
from emlab.analysis.importance import ImportanceResult  # noqa: E402
from emlab.analysis.stability import StabilityResult  # noqa: E402

COLORS = {"general": "tab:red", "narrow": "tab:blue", "random": "tab:gray"}
NORM_LABEL = r"solution norm $\|\Delta\theta\|_F$"


def _color(name: str, i: int) -> str:
    return COLORS.get(name, f"C{i + 3}")


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=200)
    plt.close(fig)
    return path


def plot_efficiency(result: EfficiencyResult, path: str | Path) -> Path:
    """Loss vs solution norm per solution; stars at m = 1, circles at the loss minima."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for i, c in enumerate(result.curves):
        color = _color(c.name, i)
        ax.plot(c.norms, c.losses, "-", color=color, label=f"{c.name} ($\\|\\theta\\|$ = {c.norm:.3g})")
        ax.plot([c.norm], [c.loss_at_one], "*", color=color, markersize=11)
        j = c.min_index
        ax.plot([c.norms[j]], [c.losses[j]], "o", mfc="none", color=color, markersize=8)
    ax.axhline(result.base_loss, color="black", linestyle=":", linewidth=1, label="base model")
    ax.set_xlabel(NORM_LABEL)
    ax.set_ylabel("loss on narrow data (nats / token)")
    ax.set_title(r"Efficiency (★ trained, ○ minimum)")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_stability(result: StabilityResult, path: str | Path) -> Path:
    """Relative loss increase vs noise fraction eps: mean over seeds with a 95% CI band."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for i, c in enumerate(result.curves):
        s, color = c.summary, _color(c.name, i)
        ax.plot(c.eps, s.mean, "o-", color=color, markersize=3, label=f"{c.name} ({len(c.seeds)} seeds)")
        ax.fill_between(c.eps, s.ci_low, s.ci_high, color=color, alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel(r"noise fraction $\varepsilon$ (orthogonal, same norm)")
    ax.set_ylabel(r"$(L_{pert} - L) / (L_{base} - L)$")
    ax.set_title("Stability (mean, 95% CI over seeds)")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_importance(result: ImportanceResult, path: str | Path) -> Path:
    """KL(base || steered) on pre-training text vs norm, with a 95% CI band where seeds repeat."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for i, name in enumerate(result.kl):
        s, color = result.summary(name), _color(name, i)
        rows = len(result.kl[name])
        ax.plot(result.norms, s.mean, "o-", color=color, markersize=3, label=name if rows == 1 else f"{name} ({rows} seeds)")
        if rows > 1:
            ax.fill_between(result.norms, s.ci_low, s.ci_high, color=color, alpha=0.2, linewidth=0)
    for i, (name, norm) in enumerate(result.solution_norms.items()):
        ax.axvline(norm, color=_color(name, i), linestyle=":", linewidth=1)
    ax.set_xlabel(NORM_LABEL)
    ax.set_ylabel("KL(base ‖ steered) on text (nats / token)")
    ax.set_title("Pre-training importance (dotted: trained norms)")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_cosines(matrix: torch.Tensor, labels: list[str], path: str | Path, title: str = "Cosine similarity") -> Path:
    """Heat map of a cosine-similarity matrix # (N, N) with labelled rows and columns."""
    values = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(labels), 0.6 + 0.45 * len(labels)))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_title(title)
    return _save(fig, path)
