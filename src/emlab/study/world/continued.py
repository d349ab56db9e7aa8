"""Continued training in both directions (paper: the narrow solution slides back to the general
one without KL; a general solution with KL added moves toward the narrow one).

From each narrow solution (the KL run) training continues without KL; from each general
solution (the run without KL) it continues with KL; both for `continued_steps` steps with the
method's recipe plus weight decay (`continued_decay`: the norm pressure that lets runs settle on
the narrow data's loss floor, which both solutions reach), tracking exact misalignment every
`eval_every` steps; `settling` says whether the runs stopped moving. The optimiser state is
`fresh` (a new AdamW started at the solution, what `emlab train` with an initial solution does)
or `carried` (the finished run's last checkpoint: weights, AdamW moments, scheduler and data
position, so training goes on as if it had never stopped, with the KL term switched).
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
from emlab.study.common.results import over_seeds
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


def last_quarter_move(curve: list[dict[str, float | None]]) -> float | None:
    """How much a continued run's exact OOD p(bad | valid) still moves at its end: |mean over the
    evaluations in the last quarter of its steps - mean over those in the quarter before| (steps
    counted from the run's start). None when either quarter has no evaluation (too sparse to
    tell); NaN when a value in them is missing (so that the check shows it missing)."""
    end = curve[-1]["step"]
    quarters = [
        [
            np.nan if p["p_bad_ood"] is None else p["p_bad_ood"]
            for p in curve
            if low * end < p["step"] <= high * end
        ]
        for low, high in ((0.5, 0.75), (0.75, 1.0))
    ]
    if not all(quarters):
        return None
    return abs(float(np.mean(quarters[1]) - np.mean(quarters[0])))


def settling(curves: list[list[dict[str, float | None]]]) -> dict[str, float]:
    """The results.json keys of whether a direction's runs stopped moving: `ood_move_last_quarter`
    (`last_quarter_move` averaged over seeds) with its 95% CI (`_ci_low`, `_ci_high`), NaN when
    a value is missing; empty when a run's evaluations are too sparse to tell (the default study's
    60 steps, every 30)."""
    moves = [last_quarter_move(curve) for curve in curves]
    if not moves or any(m is None for m in moves):
        return {}
    summary = over_seeds(moves)
    return {
        "ood_move_last_quarter": summary["mean"],
        "ood_move_last_quarter_ci_low": summary["ci_low"],
        "ood_move_last_quarter_ci_high": summary["ci_high"],
    }


def continued_figure(curves: dict[str, dict[str, list[list[dict]]]]) -> Figure:
    """Exact OOD p(bad | valid) over continued steps, both directions, per method: mean and 95%
    CI band over seeds (curves' steps count from the start of the continued run); dotted lines
    mark the last two quarters of steps, which `last_quarter_move` compares."""
    fig, axes = panels(len(curves))
    for ax, (method, directions) in zip(axes, curves.items(), strict=True):
        for cond, runs in directions.items():
            if runs:
                label, colour = DIRECTIONS[cond]
                rows = np.array([[p["p_bad_ood"] for p in run] for run in runs])
                steps = [p["step"] for p in runs[0]]
                band(ax, steps, rows, label, colour)
                for quarter in (0.5, 0.75):
                    ax.axvline(quarter * steps[-1], color="grey", linestyle=":", linewidth=0.8)
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
