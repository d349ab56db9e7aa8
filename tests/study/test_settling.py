"""Whether continued runs stopped moving: the exact OOD p(bad) of a run's last quarter of steps
against the quarter before, averaged over seeds."""

from __future__ import annotations

import math

import pytest

from emlab.study.world.continued import last_quarter_move, settling


def curve(values: list[float | None], every: int = 20) -> list[dict[str, float | None]]:
    return [{"step": every * i, "p_bad_ood": v} for i, v in enumerate(values)]


def test_last_quarter_move_hand_computed():
    # 200 steps every 20: quarter (100, 150] holds steps 120, 140 (0.6, 0.8); (150, 200] holds
    # 160, 180, 200 (0.9, 1.0, 0.95); |0.95 - 0.7| = 0.25
    run = curve([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 1.0, 0.95])
    assert last_quarter_move(run) == pytest.approx(0.25)
    # a run that went up and came back down by as much has not moved in the mean
    assert last_quarter_move(curve([0, 0.1, 0.2, 0.3, 0.4, 0.2, 0.8, 0.8, 0.2])) == pytest.approx(0)


def test_a_run_too_sparse_cannot_tell_and_a_missing_value_is_missing():
    assert last_quarter_move(curve([0.0, 0.5, 0.9], every=30)) is None  # (30, 45] is empty
    assert math.isnan(last_quarter_move(curve([0.0, 0.5, 0.6, None, 0.9])))
    # listed as missing (not met), not left out
    out = settling([curve([0.0, 0.9, 0.9, 0.9, 0.9]), curve([0.0, 0.5, 0.6, None, 0.9])])
    assert math.isnan(out["ood_move_last_quarter"])


def test_settling_averages_over_seeds_and_is_absent_when_a_run_cannot_tell():
    still = curve([0.0, 0.9, 0.9, 0.9, 0.9])
    moving = curve([0.0, 0.1, 0.2, 0.3, 0.5])
    out = settling([still, moving])
    assert out["ood_move_last_quarter"] == pytest.approx(0.1)
    assert out["ood_move_last_quarter_ci_low"] < 0.1 < out["ood_move_last_quarter_ci_high"]
    assert settling([still, curve([0.0, 0.5, 0.9], every=30)]) == {}
