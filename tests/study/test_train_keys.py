"""A train stage's cache key covers what the run depends on: the KL weight only where it is used."""

from __future__ import annotations

from emlab.config import validate_config
from emlab.study.world.config import StudyConfig
from emlab.study.world.reproduce import StudyGraph


def test_changing_a_kl_weight_reuses_exactly_the_runs_without_kl(tmp_path):
    base = StudyConfig()
    data = base.model_dump(mode="json")
    data["methods"]["lora_r1"]["kl_weight"] = 3.0
    heavier = validate_config(data, StudyConfig)
    old, new = StudyGraph(base, str(tmp_path)), StudyGraph(heavier, str(tmp_path))
    changed = sorted(run.label for run in old.train if old.train[run].key() != new.train[run].key())
    # lora_r1's KL runs, its continued runs with KL added, and those that start from a KL run
    assert changed == sorted(
        run.label
        for run in old.train
        if run.method == "lora_r1" and (run.kl or run.continued) and run.world == "world"
    )
    assert len(changed) == 3 * len(base.seeds)  # the no-KL runs keep their keys
    assert base.methods["full"].run_key(kl=True)["kl_weight"] == base.methods["full"].kl_weight
    assert "kl_weight" not in base.methods["full"].run_key(kl=False)
