"""The study's figures show the stage results they are given: one panel per method, each series
with its mean over seeds (hand-computed) and its CI band."""

from __future__ import annotations

import pytest

from emlab.study.common.figures import (
    efficiency_figure,
    em_over_steps_figure,
    importance_figure,
    plot_efficiency,
    stability_figure,
)


def _analysis(shift: float) -> dict:
    """One seed's analyses of one method; `shift` moves its numbers."""
    return {
        "efficiency": {
            "base_loss": 3.0,
            "curves": [
                {"name": "general", "norms": [0.0, 1.0, 2.0], "losses": [3.0, 1.0 + shift, 2.0]},
                {"name": "narrow", "norms": [0.0, 2.0, 4.0], "losses": [3.0, 1.5 + shift, 2.5]},
            ],
        },
        "stability": {
            "curves": [
                {
                    "name": "general",
                    "eps": [0.1, 1.0],
                    "relative": [[0.1 + shift, 0.9], [0.3 + shift, float("nan")]],
                },
                {"name": "narrow", "eps": [0.1, 1.0], "relative": [[0.2 + shift, 1.0]]},
            ]
        },
        "importance": {
            "norms": [0.0, 1.0, 2.0],
            "kl": {
                "general": [[0.0, 0.1 + shift, 0.4]],
                "narrow": [[0.0, 0.3, 0.9]],
                "random": [[0.0, 0.01, 0.02], [0.0, 0.03, 0.04]],
            },
        },
        "summary": {"norm_general": 2.0},
    }


ANALYSES = {"lora_r1": [_analysis(0.0), _analysis(0.2)], "steering": [_analysis(0.0)]}


def _labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []


def test_efficiency_has_a_panel_per_method_with_every_seed_curve():
    fig = efficiency_figure(ANALYSES)
    assert [ax.get_title() for ax in fig.axes] == ["lora_r1", "steering"]
    ax = fig.axes[0]
    assert len(ax.lines) == 2 * 2 + 1  # two curves per seed, the chat model's loss
    assert [list(line.get_ydata()) for line in ax.lines[:4]] == [
        [3.0, 1.0, 2.0],
        [3.0, 1.5, 2.5],
        [3.0, 1.2, 2.0],
        [3.0, 1.7, 2.5],
    ]
    assert list(ax.lines[-1].get_ydata()) == [3.0, 3.0]
    assert _labels(ax) == ["general", "narrow", "chat model"]
    assert ax.get_xlabel().startswith("solution norm")


def test_stability_bands_are_the_means_over_seeds_and_noise_draws():
    ax = stability_figure(ANALYSES).axes[0]
    general, narrow = ax.lines
    # general: rows (0.1, 0.9) and (0.3, 0.9) pooled over both seeds; rows with a NaN dropped
    assert list(general.get_ydata()) == pytest.approx([0.2, 0.9])
    assert list(narrow.get_ydata()) == pytest.approx([0.3, 1.0])
    assert list(general.get_xdata()) == [0.1, 1.0] and ax.get_xscale() == "log"
    assert len(ax.collections) == 2 and _labels(ax) == ["general", "narrow"]


def test_importance_is_drawn_in_units_of_the_general_norm():
    ax = importance_figure(ANALYSES).axes[0]
    general, narrow, random = ax.lines
    assert list(general.get_xdata()) == [0.0, 0.5, 1.0]
    assert list(general.get_ydata()) == pytest.approx([0.0, 0.2, 0.4])
    assert list(random.get_ydata()) == pytest.approx([0.0, 0.02, 0.03])  # 2 seeds x 2 random rows
    assert ax.get_title() == "lora_r1: KL on pre-training text" and _labels(ax) == [
        "general",
        "narrow",
        "random",
    ]


def test_em_over_steps_shifts_continued_training_to_after_the_kl_run():
    run = [
        {"step": 0, "p_bad_in_domain": 0.0, "p_bad_ood": 0.0},
        {"step": 10, "p_bad_in_domain": 0.8, "p_bad_ood": 0.4},
    ]
    other = [
        {"step": 0, "p_bad_in_domain": 0.2, "p_bad_ood": 0.0},
        {"step": 10, "p_bad_in_domain": 0.6, "p_bad_ood": 0.2},
    ]
    fig = em_over_steps_figure({"full": {"no_kl": [run, other], "kl": [other], "continued": [run]}})
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.lines}
    assert list(lines) == [
        f"{c} ({g})" for c in ("no_kl", "kl", "continued") for g in ("in-domain", "OOD")
    ]
    assert list(lines["no_kl (in-domain)"].get_ydata()) == pytest.approx([0.1, 0.7])
    assert (
        lines["no_kl (in-domain)"].get_linestyle() == "--"
        and lines["no_kl (OOD)"].get_linestyle() == "-"
    )
    assert list(lines["continued (OOD)"].get_xdata()) == [10, 20]
    assert ax.get_ylim() == (-0.02, 1.02)


def test_plot_writes_a_png(tmp_path):
    path = plot_efficiency(ANALYSES, tmp_path / "figures" / "efficiency.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_continued_training_shows_both_directions_and_the_quarters_it_compares():
    from emlab.study.world.continued import continued_figure

    def run(values):
        return [{"step": 20 * i, "p_bad_ood": v} for i, v in enumerate(values)]

    narrow = [run([0.0, 0.4, 0.8, 0.9, 0.9]), run([0.0, 0.2, 0.6, 0.9, 1.0])]
    general = [run([1.0, 0.1, 0.0, 0.0, 0.0])]
    fig = continued_figure({"full": {"continued": narrow, "continued_kl": general}})
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.lines}
    mean = lines["narrow solution, KL removed"]
    assert list(mean.get_ydata()) == pytest.approx([0.0, 0.3, 0.7, 0.9, 0.95])
    assert list(lines["general solution, KL added"].get_ydata()) == [1.0, 0.1, 0.0, 0.0, 0.0]
    quarters = {line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"}
    assert quarters == {40.0, 60.0}  # half and three quarters of 80 steps
