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
from typing import Literal

import numpy as np

from emlab.analysis.stats import summarise
from emlab.errors import EmlabError
from emlab.runs import run_path
from emlab.study.figures import _panels, _save
from emlab.train.checkpoint import latest_checkpoint
from emlab.train.config import TrainConfig

OptimiserState = Literal["fresh", "carried"]

RUN_CONDITIONS: dict[str, tuple[str, str]] = {
    "no_kl": ("no_kl", ""),
    "kl": ("kl", ""),
    "continued": ("no_kl", "/continued"),
    "continued_kl": ("kl", "/continued"),
}
"""results.json condition -> (KL part of the run label, label tail): 'continued' goes on from
the narrow (KL) solution without KL, 'continued_kl' from the general solution with KL."""

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


def continued_label(kl: bool) -> str:
    """Results key of a continued run: 'continued' (narrow solution, KL off) or
    'continued_kl' (general solution, KL on)."""
    return "continued_kl" if kl else "continued"


def run_label(world: str, method: str, condition: str, seed: int) -> str:
    """The run label of one condition (see RUN_CONDITIONS), e.g. 'world/full/kl/seed0/continued'."""
    kl, tail = RUN_CONDITIONS[condition]
    return f"{world}/{method}/{kl}/seed{seed}{tail}"


def continued_curves(
    runs: dict[str, dict], methods: list[str], seeds: list[int]
) -> dict[str, dict[str, list[list[dict]]]]:
    """Per method and direction, the exact curves of the continued runs present (one per seed)."""
    return {
        m: {
            c: [runs[k]["curve"] for s in seeds if (k := run_label("world", m, c, s)) in runs]
            for c in DIRECTIONS
        }
        for m in methods
    }


def plot_continued(curves: dict[str, dict[str, list[list[dict]]]], path: Path) -> Path:
    """Exact OOD p(bad | valid) over continued steps, both directions, per method: mean and 95%
    CI band over seeds (curves' steps count from the start of the continued run)."""
    fig, axes = _panels(len(curves))
    for ax, (method, directions) in zip(axes, curves.items(), strict=True):
        for cond, runs in directions.items():
            if not runs:
                continue
            label, colour = DIRECTIONS[cond]
            x = [p["step"] for p in runs[0]]
            s = summarise(np.array([[p["p_bad_ood"] for p in run] for run in runs]))
            ax.plot(x, s.mean, color=colour, label=label)
            ax.fill_between(x, s.ci_low, s.ci_high, color=colour, alpha=0.2, linewidth=0)
        ax.set(
            title=method,
            xlabel="continued training step",
            ylabel="exact OOD p(bad | valid)",
            ylim=(-0.02, 1.02),
        )
    axes[0].legend(fontsize=7)
    return _save(fig, path)
