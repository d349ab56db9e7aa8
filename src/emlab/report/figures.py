"""What every emlab figure shares: a new figure, the colours, CI bands, and writing it.

Figures are built on matplotlib's object API (`matplotlib.figure.Figure`): no pyplot state and
no backend switch, so importing emlab changes nothing in a user's own plotting, and figures
render on a machine without a display (PNG and PDF through the Agg canvas). Each figure of the
analyses (`emlab.analysis.figures`), the evaluation (`emlab.report.eval_figures`) and the study
(`emlab.study.common.figures`) has a `*_figure` function that returns the Figure (its axes, lines
and
labels can be read back) and a `plot_*` function that writes it with `save`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from emlab.analysis.stats import summarise
from emlab.io import atomic_path

COLOURS = {"general": "tab:red", "narrow": "tab:blue", "random": "tab:gray"}
"""The colour of a solution kind in every figure."""
NORM_LABEL = r"solution norm $\|\Delta\theta\|_F$"
DPI = 150


def colour(name: str, i: int) -> str:
    """The colour of series `name` (see COLOURS), else the i-th of matplotlib's cycle after them."""
    return COLOURS.get(name, f"C{i + 3}")


def new_figure(width: float = 5.0, height: float = 3.6) -> tuple[Figure, Axes]:
    """A figure of `width` x `height` inches with one axes."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def panels(n: int, width: float = 4.2, height: float = 3.6) -> tuple[Figure, list[Axes]]:
    """A figure of n axes side by side, each `width` x `height` inches."""
    fig = Figure(figsize=(width * n, height))
    axes = fig.subplots(1, n, squeeze=False)
    return fig, list(axes[0])


def band(
    ax: Axes,
    x: Sequence[float],
    rows: np.ndarray,
    label: str,
    colour: str,
    alpha: float = 0.2,
    **line: object,
) -> None:
    """The mean of `rows` # (seeds, len(x)) as a line and its 95% CI over rows as a band
    (`emlab.analysis.stats.summarise`); `line` goes to `ax.plot` (e.g. linestyle)."""
    s = summarise(rows)
    ax.plot(x, s.mean, label=label, color=colour, **line)
    ax.fill_between(x, s.ci_low, s.ci_high, color=colour, alpha=alpha, linewidth=0)


def save(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Lay `fig` out and write it to `path` in one rename (format from the suffix, default PNG;
    parent folders made); returns the path."""
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path
