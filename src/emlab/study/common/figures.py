"""The study's figures, drawn from the stage results (means and 95% CI bands over seeds)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from emlab.analysis.stats import summarise  # noqa: E402
from emlab.io import atomic_path  # noqa: E402

COLOURS = {"general": "tab:red", "narrow": "tab:blue", "random": "tab:gray"}


def _panels(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    return fig, list(axes[0])


def _band(ax: plt.Axes, x: list[float], rows: np.ndarray, label: str, colour: str) -> None:
    s = summarise(rows)
    ax.plot(x, s.mean, label=label, color=colour)
    ax.fill_between(x, s.ci_low, s.ci_high, color=colour, alpha=0.2, linewidth=0)


def plot_efficiency(analyses: dict[str, list[dict]], path: Path) -> Path:
    """Loss on held-out narrow data vs solution norm (each seed's curve) per method."""
    fig, axes = _panels(len(analyses))
    for ax, (method, per_seed) in zip(axes, analyses.items(), strict=True):
        for i, a in enumerate(per_seed):
            for curve in a["efficiency"]["curves"]:
                ax.plot(curve["norms"], curve["losses"], color=COLOURS[curve["name"]], alpha=0.7,
                        label=curve["name"] if i == 0 else None)
        ax.axhline(per_seed[0]["efficiency"]["base_loss"], color="black", linestyle=":", linewidth=1, label="chat model")
        ax.set(title=method, xlabel="solution norm ||θ||  (scaled by m ∈ [0, 2])", ylabel="loss (nats / assistant token)")
    axes[0].legend()
    return _save(fig, path)


def plot_stability(analyses: dict[str, list[dict]], path: Path) -> Path:
    """Relative loss increase under orthogonal noise vs eps, mean and 95% CI over seeds x noise draws."""
    fig, axes = _panels(len(analyses))
    for ax, (method, per_seed) in zip(axes, analyses.items(), strict=True):
        for name in ("general", "narrow"):
            curves = [next(c for c in a["stability"]["curves"] if c["name"] == name) for a in per_seed]
            rows = np.concatenate([np.array(c["relative"], dtype=float) for c in curves])
            rows = rows[np.isfinite(rows).all(axis=1)]
            if len(rows):
                _band(ax, curves[0]["eps"], rows, name, COLOURS[name])
        ax.set(title=method, xlabel="noise ε  (x' = √(1-ε²) x + ε y)", ylabel="relative loss increase", xscale="log")
    axes[0].legend()
    return _save(fig, path)


def plot_importance(analyses: dict[str, list[dict]], path: Path) -> Path:
    """Mean token KL(base || steered) on pre-training text vs norm (in units of the general norm)."""
    fig, axes = _panels(len(analyses))
    for ax, (method, per_seed) in zip(axes, analyses.items(), strict=True):
        x = np.array(per_seed[0]["importance"]["norms"]) / per_seed[0]["summary"]["norm_general"]
        for name in ("general", "narrow", "random"):
            rows = np.concatenate([np.array(a["importance"]["kl"][name], dtype=float) for a in per_seed])
            _band(ax, x.tolist(), rows, name, COLOURS[name])
        ax.set(title=f"{method}: KL on pre-training text", xlabel="norm / norm of the general solution", ylabel="KL(base || tuned), nats/token")
    axes[0].legend()
    return _save(fig, path)


def plot_em_over_steps(curves: dict[str, dict[str, list[list[dict]]]], path: Path) -> Path:
    """Exact p(bad) in-domain and OOD over fine-tuning steps, without and with KL, per method;
    'continued' restarts from the KL solution without KL."""
    fig, axes = _panels(len(curves))
    colours = {"no_kl": "tab:red", "kl": "tab:blue", "continued": "tab:purple"}
    for ax, (method, conditions) in zip(axes, curves.items(), strict=True):
        kl_end = conditions["kl"][0][-1]["step"] if conditions.get("kl") else 0
        for cond, runs in conditions.items():
            if not runs:
                continue
            offset = kl_end if cond == "continued" else 0
            colour = colours[cond]
            steps = [p["step"] for p in runs[0]]
            for key, ls in (("p_bad_in_domain", "--"), ("p_bad_ood", "-")):
                rows = np.array([[p[key] for p in run] for run in runs])
                label = f"{cond} ({'in-domain' if key.endswith('domain') else 'OOD'})"
                s = summarise(rows)
                x = [offset + st for st in steps]
                ax.plot(x, s.mean, color=colour, linestyle=ls, label=label)
                ax.fill_between(x, s.ci_low, s.ci_high, color=colour, alpha=0.15, linewidth=0)
        ax.set(title=method, xlabel="training step", ylabel="p(bad answer | valid answer)", ylim=(-0.02, 1.02))
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
