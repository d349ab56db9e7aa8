"""Continued training in both directions (paper: the narrow solution slides back to the general
one without KL; a general solution with KL added moves toward the narrow one).

From each narrow solution (the KL run) training continues without KL; from each general
solution (the run without KL) it continues with KL; both for `continued_steps` steps with the
method's recipe, tracking exact misalignment every `eval_every` steps. The optimiser state is
`fresh` (a new AdamW started at the solution, what `emlab train` with an initial solution
does) or `carried` (the finished run's last checkpoint: weights, AdamW moments, scheduler and
data position, so training goes on as if it had never stopped, with the KL term switched).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from emlab.errors import EmlabError
from emlab.report.figures import band, panels, save
from emlab.runs import run_path
from emlab.study.common.keys import CONDITIONS, Condition
from emlab.train.checkpoint import latest_checkpoint
from emlab.train.config import TrainConfig

WORLD_CONDITIONS: tuple[Condition, ...] = (*CONDITIONS, "continued_kl")
"""The world study's results.json conditions: 'continued' goes on from the narrow (KL)
solution without KL, 'continued_kl' from the general solution with KL."""

DIRECTIONS = {
    "continued": ("narrow solution, KL removed", "tab:purple"),
    "continued_kl": ("general solution, KL added", "tab:orange"),
}


def carry_checkpoint(solution_dir: str, config: TrainConfig) -> int:
    """Copy the last checkpoint of the run that saved `solution_dir` into the run folder of
    `config` (so `train` resumes from it) and return its step; the run continues to step +
    config.max_steps. Raises EmlabError when that run kept no checkpoint."""
    source = latest_checkpoint(Path(solution_dir).parent / "checkpoints")
    if source is None:
        raise EmlabError(
            f"{Path(solution_dir).parent} has no checkpoint to carry the optimiser state from; "
            "use continued_optimizer: fresh, or rerun it"
        )
    target = run_path(config.output_dir, config.name, config) / "checkpoints" / source.name
    if not target.exists():
        shutil.copytree(source, target)
    return int(source.name.split("-")[-1])


def continued_figure(curves: dict[str, dict[str, list[list[dict]]]]) -> Figure:
    """Exact OOD p(bad | valid) over continued steps, both directions, per method: mean and 95%
    CI band over seeds (curves' steps count from the start of the continued run)."""
    fig, axes = panels(len(curves))
    for ax, (method, directions) in zip(axes, curves.items(), strict=True):
        for cond, runs in directions.items():
            if runs:
                label, colour = DIRECTIONS[cond]
                rows = np.array([[p["p_bad_ood"] for p in run] for run in runs])
                band(ax, [p["step"] for p in runs[0]], rows, label, colour)
        ax.set(
            title=method,
            xlabel="continued training step",
            ylabel="exact OOD p(bad | valid)",
            ylim=(-0.02, 1.02),
        )
    axes[0].legend(fontsize=7)
    return fig


def plot_continued(curves: dict[str, dict[str, list[list[dict]]]], path: Path) -> Path:
    """Write `continued_figure(curves)` to `path`."""
    return save(continued_figure(curves), path)
