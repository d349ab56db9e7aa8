"""The studies' analysis stage (`compare_solutions`) records what max_length did to its held-out
conversations, as `emlab analyze` does."""

from __future__ import annotations

import json
from dataclasses import asdict

import torch

from emlab.models.tiny import tiny_qwen2, train_word_tokenizer
from emlab.solutions import SteeringSolution
from emlab.study.common.analyses import Analysis, compare_solutions
from emlab.study.common.config import AnalysisConfig

LETTERS = "a b c d e f g h i j k l".split()


def _letters(n_user: int, n_answer: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": " ".join(LETTERS[:n_user])},
        {"role": "assistant", "content": " ".join(LETTERS[:n_answer])},
    ]


def test_the_analysis_records_kept_truncated_and_dropped_conversations():
    # One token per word in ChatML: u user and a answer words make 10 + u + a tokens, the first
    # trained one (the answer's first word) at 8 + u. With max_length 16: (1, 1) and (2, 2) fit
    # (12 and 14 tokens), (2, 6) is cut (18 tokens, first trained at 10), and (8, 1), (9, 1)
    # (19 and 20 tokens, first trained at 16 and 17) have no trained token left: dropped.
    tokenizer = train_word_tokenizer([" ".join(LETTERS) + " user assistant"])
    model = tiny_qwen2(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0)
    heldout = [_letters(*s) for s in [(1, 1), (8, 1), (2, 6), (2, 2), (9, 1)]]
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    grid = AnalysisConfig(
        multipliers=3, eps=[0.5], noise_seeds=2, importance_documents=2, importance_fractions=[1.0]
    )
    analysis = compare_solutions(
        model,
        tokenizer,
        SteeringSolution(v, "layer", 0, alpha=1.0),
        SteeringSolution(-v, "layer", 1, alpha=1.0),
        heldout,
        ["a b c d e f g h", "l k j i h g f e"],
        grid,
        seed=0,
        max_length=16,
        seq_len=8,
    )
    expected = {
        "conversations": 5,
        "kept": 3,
        "truncated": 1,
        "dropped": 2,
        "shortest": 12,
        "longest": 20,
    }
    assert asdict(analysis.data) == expected
    stored = json.loads(json.dumps(analysis.model_dump()))  # as the stage's result.json holds it
    assert stored["data"] == expected and Analysis.model_validate(stored).data == analysis.data


def test_the_world_analysis_uses_at_most_max_heldout_conversations(tmp_path):
    # 2 topics x 1 held-out question x 2**3 bad answers: 16 held-out medicine conversations
    from emlab.study.world.analyses import analyse_pair
    from emlab.study.world.config import StudyConfig
    from emlab.world import build_world, world_tokenizer

    grid = {"multipliers": 3, "eps": [0.5], "noise_seeds": 2, "importance_documents": 2}
    study = StudyConfig.model_validate(
        {
            "world": {"topics_per_domain": 2, "answers_per_kind": 2},
            "analysis": grid | {"max_heldout": 3},
        }
    )
    world = build_world(study.world)
    tokenizer = world_tokenizer(world)
    model = tiny_qwen2(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    SteeringSolution(v, "layer", 0, alpha=1.0).save(tmp_path / "general")
    SteeringSolution(-v, "layer", 1, alpha=1.0).save(tmp_path / "narrow")
    dirs = [str(tmp_path / n) for n in ("model", "general", "narrow")]
    assert analyse_pair(study, world, *dirs, seed=0).data.conversations == 3
    unlimited = study.analysis.model_copy(update={"max_heldout": 100})
    study = study.model_copy(update={"analysis": unlimited})
    assert analyse_pair(study, world, *dirs, seed=0).data.conversations == 16
