"""The model study's task costs: sampling, judging and analyses weigh in the overall bar by their
work (decoding steps, judgments, forward passes), in training steps, as training does."""

from __future__ import annotations

import re

import pytest
from test_model_study import write_inputs

from emlab.config import load_config
from emlab.study.common.graph import Progress, with_needs
from emlab.study.common.stages import StageResult
from emlab.study.model.config import ModelStudyConfig
from emlab.study.model.study import (
    DECODE_STEP_COST,
    EVAL_PASS_COST,
    JUDGMENT_COST,
    ModelStudyGraph,
    StudyInputs,
)


def test_sample_judge_and_analysis_costs_weigh_in_the_bar(
    tmp_path, capsys, tiny_tokenizer, toy_data
):
    inputs = StudyInputs(
        load_config(write_inputs(tmp_path, tiny_tokenizer, toy_data), ModelStudyConfig)
    )
    graph = ModelStudyGraph(inputs, str(tmp_path / "stages"))
    tasks = with_needs(graph.tasks())
    assert all(t.cost > 0 for t in tasks)
    # 22 answers: 3 in-domain questions and the 8 general ones, 2 samples each; one batch of 32
    # per question set, 8 new tokens: 16 decoding steps; 2 metrics: 44 judgments
    sample = graph.base.answers
    assert sample.cost == pytest.approx(16 * DECODE_STEP_COST)
    assert graph.base.cost == pytest.approx(44 * JUDGMENT_COST)
    # 8 held-out conversations in batches of 4: 2 batches x (base + 3 x (3 multipliers + equal
    # norm) + 2 x 2 eps x 2 noise seeds) = 42; 4 text chunks, 1 batch x (base + 3 x 2 norms) = 7
    assert graph.analysis["lora_r1", 0].cost == pytest.approx(49 * EVAL_PASS_COST)
    # training: 3 steps, 6 with KL, 2 continued, per method; 7 sampling and judging stages
    total = 2 * (3 + 6 + 2) + 7 * (sample.cost + graph.base.cost) + 2 * 49 * EVAL_PASS_COST
    assert sum(t.cost for t in tasks) == pytest.approx(total)
    bar = Progress(tasks, "study", show=True)
    for task in [*graph.train.values(), sample]:
        bar.finished(task, StageResult())
    # every fine-tune and the base model's answers done: (22 + 0.48) / 55.376 = 40.6% (61% when
    # only training had a cost and every other stage counted 1)
    assert bar.bar.n / bar.bar.total == pytest.approx((22 + 16 * DECODE_STEP_COST) / total)
    bar.bar.refresh()  # drawn now, not after tqdm's minimum interval
    assert re.findall(r"study (\d+/\d+) stages: +(\d+)%", capsys.readouterr().err)[-1] == (
        "7/22",
        "41",
    )
