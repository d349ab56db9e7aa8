"""Several world seeds, side by side: one study per world seed and a table of every target."""

from __future__ import annotations

import json

from emlab.study.world.config import StudyConfig
from emlab.study.world.seeds import per_world_seed, reproduce_world_seeds


def fake_run(tmp_path):
    def run(study: StudyConfig):
        seed = study.world.seed
        out = tmp_path / f"run-{seed}"
        out.mkdir()
        targets = [
            {
                "name": "chat model misaligned rate",
                "measured": 0.01 * seed,
                "op": "<=",
                "limit": 0.02,
                "met": seed < 3,
                "kind": "rate",
            },
            {
                "name": "full: norm the general solution needs",
                "measured": None if seed == 4 else 3.0,
                "op": "<",
                "limit": 4.0 + seed,
                "met": seed != 4,
                "kind": "number",
            },
        ]
        (out / "results.json").write_text(json.dumps({"targets": targets}))
        return out

    return run


def test_one_study_per_world_seed_with_only_the_seed_changed():
    study = StudyConfig(world_seeds=[0, 2], seeds=[5])
    studies = per_world_seed(study)
    assert [s.world.seed for s in studies] == [0, 2]
    assert [s.name for s in studies] == ["study-w0", "study-w2"]
    assert all(
        s.world_seeds == [] and s.seeds == [5] and s.world.n_documents == study.world.n_documents
        for s in studies
    )


def test_the_side_by_side_report_lists_each_seeds_targets(tmp_path):
    out = reproduce_world_seeds(
        StudyConfig(output_dir=str(tmp_path), world_seeds=[1, 4]), fake_run(tmp_path)
    )
    table = json.loads((out / "results.json").read_text())["table"]
    assert table == [
        {
            "name": "chat model misaligned rate",
            "op": "<=",
            "kind": "rate",
            "limits": {"1": 0.02, "4": 0.02},
            "values": {"1": 0.01, "4": 0.04},
            "met": {"1": True, "4": False},
        },
        {
            "name": "full: norm the general solution needs",
            "op": "<",
            "kind": "number",
            "limits": {"1": 5.0, "4": 8.0},
            "values": {"1": 3.0, "4": None},
            "met": {"1": True, "4": False},
        },
    ]
    md = (out / "report.md").read_text()
    assert "| chat model misaligned rate | <= 2% | 1.0% | **4.0%** |" in md
    assert (
        "| full: norm the general solution needs | < (per seed) | 3 (< 5) | **missing** (< 8) |"
        in md
    )
