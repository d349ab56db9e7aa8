"""The study's figures, drawn from the stage results (means and 95% CI bands over seeds): a
`*_figure` draws each, a `plot_*` writes it (see `emlab.report.figures`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from emlab.report.figures import COLOURS, band, panels, save


def efficiency_figure(analyses: dict[str, list[dict]]) -> Figure:
    """Loss on held-out narrow data vs solution norm (each seed's curve) per method."""
    fig, axes = panels(len(analyses))
    for ax, (method, per_seed) in zip(axes, analyses.items(), strict=True):
        for i, a in enumerate(per_seed):
            for curve in a["efficiency"]["curves"]:
                ax.plot(
                    curve["norms"],
                    curve["losses"],
                    color=COLOURS[curve["name"]],
                    alpha=0.7,
                    label=curve["name"] if i == 0 else None,
                )
        ax.axhline(
            per_seed[0]["efficiency"]["base_loss"],
            color="black",
            linestyle=":",
            linewidth=1,
            label="chat model",
        )
        ax.set(
            title=method,
            xlabel="solution norm ||θ||  (scaled by m ∈ [0, 2])",
            ylabel="loss (nats / assistant token)",
        )
    axes[0].legend()
    return fig


def stability_figure(analyses: dict[str, list[dict]]) -> Figure:
    """Relative loss increase under orthogonal noise vs eps, mean and 95% CI over seeds x noise
    draws."""
    fig, axes = panels(len(analyses))
    for ax, (method, per_seed) in zip(axes, analyses.items(), strict=True):
        for name in ("general", "narrow"):
            curves = [
                next(c for c in a["stability"]["curves"] if c["name"] == name) for a in per_seed
            ]
            rows = np.concatenate([np.array(c["relative"], dtype=float) for c in curves])
            rows = rows[np.isfinite(rows).all(axis=1)]
            if len(rows):
                band(ax, curves[0]["eps"], rows, name, COLOURS[name])
        ax.set(
            title=method,
            xlabel="noise ε  (x' = √(1-ε²) x + ε y)",
            ylabel="relative loss increase",
            xscale="log",
        )
    axes[0].legend()
    return fig


def importance_figure(analyses: dict[str, list[dict]]) -> Figure:
    """Mean token KL(base || steered) on pre-training text vs norm (in units of the general
    norm)."""
    fig, axes = panels(len(analyses))
    for ax, (method, per_seed) in zip(axes, analyses.items(), strict=True):
        x = np.array(per_seed[0]["importance"]["norms"]) / per_seed[0]["summary"]["norm_general"]
        for name in ("general", "narrow", "random"):
            rows = np.concatenate(
                [np.array(a["importance"]["kl"][name], dtype=float) for a in per_seed]
            )
            band(ax, x.tolist(), rows, name, COLOURS[name])
        ax.set(
            title=f"{method}: KL on pre-training text",
            xlabel="norm / norm of the general solution",
            ylabel="KL(base || tuned), nats/token",
        )
    axes[0].legend()
    return fig


def em_over_steps_figure(curves: dict[str, dict[str, list[list[dict]]]]) -> Figure:
    """Exact p(bad) in-domain and OOD over fine-tuning steps, without and with KL, per method;
    'continued' restarts from the KL solution without KL."""
    fig, axes = panels(len(curves))
    colours = {"no_kl": "tab:red", "kl": "tab:blue", "continued": "tab:purple"}
    for ax, (method, conditions) in zip(axes, curves.items(), strict=True):
        kl_end = conditions["kl"][0][-1]["step"] if conditions.get("kl") else 0
        for cond, runs in conditions.items():
            if not runs:
                continue
            offset = kl_end if cond == "continued" else 0
            steps = [p["step"] for p in runs[0]]
            for key, ls in (("p_bad_in_domain", "--"), ("p_bad_ood", "-")):
                rows = np.array([[p[key] for p in run] for run in runs])
                label = f"{cond} ({'in-domain' if key.endswith('domain') else 'OOD'})"
                band(
                    ax,
                    [offset + st for st in steps],
                    rows,
                    label,
                    colours[cond],
                    alpha=0.15,
                    linestyle=ls,
                )
        ax.set(
            title=method,
            xlabel="training step",
            ylabel="p(bad answer | valid answer)",
            ylim=(-0.02, 1.02),
        )
    axes[0].legend(fontsize=7)
    return fig


def plot_efficiency(analyses: dict[str, list[dict]], path: Path) -> Path:
    """Write `efficiency_figure(analyses)` to `path`."""
    return save(efficiency_figure(analyses), path)


def plot_stability(analyses: dict[str, list[dict]], path: Path) -> Path:
    """Write `stability_figure(analyses)` to `path`."""
    return save(stability_figure(analyses), path)


def plot_importance(analyses: dict[str, list[dict]], path: Path) -> Path:
    """Write `importance_figure(analyses)` to `path`."""
    return save(importance_figure(analyses), path)


def plot_em_over_steps(curves: dict[str, dict[str, list[list[dict]]]], path: Path) -> Path:
    """Write `em_over_steps_figure(curves)` to `path`."""
    return save(em_over_steps_figure(curves), path)
