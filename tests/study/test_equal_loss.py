"""Efficiency at equal loss: the norm each solution needs to reach the narrow solution's loss."""

from __future__ import annotations

import math

import pytest

from emlab.study.world.equal_loss import (
    equal_loss_markdown,
    equal_loss_over_seeds,
    equal_loss_summary,
    norm_to_reach,
)


def curve(name: str, norm: float, losses: list[float]) -> dict:
    ms = [0.0, 0.5, 1.0, 1.5, 2.0]
    return {
        "name": name,
        "norm": norm,
        "norms": [m * norm for m in ms],
        "losses": losses,
        "loss_at_one": losses[2],
    }


EFFICIENCY = {
    "curves": [
        curve("general", 1.0, [1.0, 0.6, 0.4, 0.35, 0.4]),
        curve("narrow", 2.0, [1.0, 0.8, 0.5, 0.45, 0.5]),
        curve("random", 1.0, [1.0, 1.0, 1.0, 1.0, 1.0]),
    ]
}


def test_norm_to_reach_interpolates_the_first_crossing():
    assert norm_to_reach([0.0, 1.0, 2.0], [1.0, 0.5, 0.2], 0.4) == pytest.approx(1 + 0.1 / 0.3)
    assert norm_to_reach([0.0, 1.0, 2.0], [1.0, 0.3, 0.1], 0.4) == pytest.approx(
        6 / 7
    )  # 0.6 of the way to 0.3: 0.6/0.7
    assert math.isnan(norm_to_reach([0.0, 1.0], [1.0, 0.9], 0.5))


def test_each_curve_is_read_at_the_narrow_solutions_loss_and_norm():
    s = equal_loss_summary(EFFICIENCY)
    assert s["target_loss"]["narrow_final"] == 0.5
    # general: 0.6 at norm 0.5, 0.4 at norm 1 -> 0.5 at norm 0.75; at the narrow norm (2.0) its loss
    # is 0.4
    assert s["general"]["norm_to_narrow_loss"] == pytest.approx(0.75)
    assert s["general"]["loss_at_narrow_norm"] == pytest.approx(0.4)
    assert s["narrow"]["norm_to_narrow_loss"] == pytest.approx(2.0)
    assert s["narrow"]["loss_at_narrow_norm"] == pytest.approx(0.5)
    assert math.isnan(s["random"]["norm_to_narrow_loss"])
    assert s["random"]["loss_at_narrow_norm"] == pytest.approx(
        1.0
    )  # the random sweep ends at norm 2.0


def test_over_seeds_and_the_report_table():
    second = {
        "curves": [curve("general", 1.0, [1.0, 0.8, 0.6, 0.4, 0.35]), *EFFICIENCY["curves"][1:]]
    }
    out = equal_loss_over_seeds([EFFICIENCY, second])
    # seed 2: 0.6 at norm 1.0, 0.4 at norm 1.5 -> 0.5 at 1.25; mean of 0.75 and 1.25
    assert out["general"]["norm_to_narrow_loss"]["mean"] == pytest.approx(1.0)
    assert out["target_loss"]["mean"] == pytest.approx(0.5)
    lines = equal_loss_markdown({"full": out})
    assert lines[-1].startswith("| full | 0.5 [0.5, 0.5] | 1 [")
