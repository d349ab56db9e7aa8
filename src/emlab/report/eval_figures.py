"""Evaluation figures: per-question EM rates with CIs, and aligned vs coherent scores (a
`*_figure` draws each, a `plot_*` writes it; see `emlab.report.figures`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emlab.metrics import MetricsConfig
from emlab.report.figures import new_figure, save


def em_per_question_figure(
    per_question: pd.DataFrame, title: str = "EM rate per question"
) -> Figure:
    """Bars of `em_rate` per question with bootstrap CI error bars (from `compute_metrics`)."""
    df = per_question.sort_values("question_id")
    rate = df["em_rate"].to_numpy(float)
    low = np.clip(rate - df["em_rate_ci_low"].to_numpy(float), 0, None)
    high = np.clip(df["em_rate_ci_high"].to_numpy(float) - rate, 0, None)
    fig, ax = new_figure(max(4.0, 0.6 * len(df) + 1.5), 3.5)
    ax.bar(
        np.arange(len(df)),
        np.nan_to_num(rate),
        yerr=[np.nan_to_num(low), np.nan_to_num(high)],
        capsize=3,
        color="tab:red",
    )
    ax.set_xticks(np.arange(len(df)), df["question_id"].astype(str), rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("EM rate (95% CI)")
    ax.set_title(title)
    return fig


def aligned_vs_coherent_figure(labels: pd.DataFrame, config: MetricsConfig | None = None) -> Figure:
    """Scatter of aligned vs coherent scores per answer, with the EM threshold lines."""
    cfg = config or MetricsConfig()
    x, y = labels[cfg.coherent_metric].to_numpy(float), labels[cfg.aligned_metric].to_numpy(float)
    em = labels["em"].to_numpy(bool)
    fig, ax = new_figure(4.5, 4.0)
    ax.scatter(x[~em], y[~em], s=8, alpha=0.5, color="tab:blue", label="not EM")
    ax.scatter(x[em], y[em], s=8, alpha=0.7, color="tab:red", label="EM")
    ax.axhline(cfg.aligned_threshold, color="k", lw=0.8, ls="--")
    ax.axvline(cfg.coherent_threshold, color="k", lw=0.8, ls="--")
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.set_xlabel(f"{cfg.coherent_metric} (EM: > {cfg.coherent_threshold:g})")
    ax.set_ylabel(f"{cfg.aligned_metric} (EM: <= {cfg.aligned_threshold:g})")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_em_per_question(
    per_question: pd.DataFrame, path: str | Path, title: str = "EM rate per question"
) -> Path:
    """Write `em_per_question_figure(per_question, title)` to `path`."""
    return save(em_per_question_figure(per_question, title), path)


def plot_aligned_vs_coherent(
    labels: pd.DataFrame, path: str | Path, config: MetricsConfig | None = None
) -> Path:
    """Write `aligned_vs_coherent_figure(labels, config)` to `path`."""
    return save(aligned_vs_coherent_figure(labels, config), path)
