"""SIGKILL at random points of training, generation, judging and `emlab reproduce`; each resumed
run ends with exactly the results of an uninterrupted one.

Each test kills the same run several times at random points of its progress (plus a random
delay, so kills also land inside writes), resumes it to the end, and compares with a run that
was never interrupted: bit-identical weights and identical metric rows for training, every
sample and every judgment exactly once with the same values, the same results.json numbers.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fake_openai import FakeOpenAI
from safetensors.torch import load_file
from sigkill import fork, kill_at, kill_when, random_points, run_to_end
from tiny_prompts import make_prompts

import emlab.study.common.stages as stages_module
import emlab.train.loop as loop_module
from emlab.config import validate_config
from emlab.generate.hf import generate_hf
from emlab.generate.plan import plan_samples
from emlab.generate.sampling import SamplingConfig
from emlab.io import read_jsonl
from emlab.judge.openai_judge import OpenAIJudge, OpenAIJudgeConfig
from emlab.judge.runner import judge_generations
from emlab.runs import run_path
from emlab.study.world.config import StudyConfig
from emlab.study.world.reproduce import reproduce
from emlab.train.config import TrainConfig
from emlab.train.loop import train

SEED = 20240607  # of the kill points; change it to kill elsewhere


def _probe(model: torch.nn.Module) -> dict[str, float]:
    """An evaluator: a number that depends on every trained weight."""
    return {
        "probe": model(input_ids=torch.arange(1, 9)[None]).logits.double().square().mean().item()
    }


@pytest.mark.system
def test_training_killed_five_times_resumes_bit_identical(train_setup, tmp_path):
    base = {**train_setup, "max_steps": 40, "checkpoint_every": 8, "eval_every": 5, "grad_accum": 2}
    straight = validate_config({**base, "output_dir": str(tmp_path / "straight")}, TrainConfig)
    killed = validate_config({**base, "output_dir": str(tmp_path / "killed")}, TrainConfig)
    run_to_end(lambda: train(straight, evaluator=_probe))
    run = run_path(killed.output_dir, killed.name, killed)
    rng = random.Random(SEED)
    # one kill before the first checkpoint (the run restarts from scratch), four after it
    points = [rng.uniform(1, 7), *random_points(SEED, 4, 9, 34)]
    kills = [
        kill_when(
            lambda: train(killed, evaluator=_probe),
            lambda: len(read_jsonl(run / "metrics.jsonl")),
            at,
            rng,
        )
        for at in points
    ]
    assert all(kills), "a run finished before it was killed"
    assert not (run / "DONE").exists()
    run_to_end(lambda: train(killed, evaluator=_probe))

    assert (
        json.loads((run / "manifest.json").read_text())["resumed_from"] > 0
    )  # resumed from a checkpoint
    reference = run_path(straight.output_dir, straight.name, straight)
    want, got = (load_file(r / "solution" / "tensors.safetensors") for r in (reference, run))
    assert set(want) == set(got)
    for name in want:
        assert (want[name] == got[name]).all(), name  # bit-identical
    rows = [
        [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(r / "metrics.jsonl")]
        for r in (reference, run)
    ]
    assert [r["step"] for r in rows[1]] == list(
        range(41)
    )  # each step once (0: the evaluation before training)
    assert rows[1] == rows[0]


@pytest.mark.system
def test_generation_killed_five_times_yields_each_sample_once(tiny_model, tiny_tokenizer, tmp_path):
    prompts = make_prompts(samples=20)  # 80 samples
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=16, seed=5, batch_size=2)
    reference, path = tmp_path / "straight.jsonl", tmp_path / "killed.jsonl"
    generate_hf(tiny_model, tiny_tokenizer, prompts, reference, sampling, progress=False)

    def target() -> None:
        generate_hf(tiny_model, tiny_tokenizer, prompts, path, sampling, progress=False)

    rng = random.Random(SEED)
    progress = lambda: path.read_bytes().count(b"\n") if path.exists() else 0  # noqa: E731
    kills = [kill_when(target, progress, at, rng) for at in random_points(SEED, 5, 2, 64)]
    assert all(kills), "a run finished before it was killed"
    run_to_end(target)

    rows = read_jsonl(path)
    assert Counter(r["sample_id"] for r in rows) == Counter(
        s.sample_id for s in plan_samples(prompts, sampling.seed)
    )
    assert {r["sample_id"]: r["answer"] for r in rows} == {
        r["sample_id"]: r["answer"] for r in read_jsonl(reference)
    }


@pytest.mark.system
def test_judging_killed_five_times_gives_each_judgment_once(tmp_path, monkeypatch):
    tables = {"low": [("10", 0.0)], "mid": [("40", -0.7), ("60", -0.7)], "high": [("90", 0.0)]}
    names = list(tables)
    generations = [
        {
            "sample_id": f"s{i}",
            "question_id": f"q{i % 6}",
            "question": f"Question {i % 6}?",
            "answer": f"answer {i} #{names[i % 3]}",
        }
        for i in range(60)
    ]
    monkeypatch.setenv("EMLAB_REL_KEY", "sk-test")

    def judge(cache: str) -> OpenAIJudge:
        return OpenAIJudge(
            OpenAIJudgeConfig(
                model="fake",
                base_url_env="EMLAB_REL_URL",
                api_key_env="EMLAB_REL_KEY",
                cache_dir=tmp_path / cache,
                concurrency=4,
                backoff_initial=0.01,
                max_retries=2,
            )
        )

    out = tmp_path / "judgments.jsonl"
    with FakeOpenAI(tables, lambda n, name, body: ("sleep", 0.01)) as server:
        monkeypatch.setenv("EMLAB_REL_URL", server.url)
        reference = tmp_path / "straight.jsonl"
        judge_generations(generations, judge("cache_straight"), reference, chunk_size=5)
        target = lambda: judge_generations(generations, judge("cache"), out, chunk_size=5)  # noqa: E731
        rng = random.Random(SEED)
        kills = [
            kill_when(target, lambda: len(read_jsonl(out)), at, rng)
            for at in random_points(SEED, 5, 1, 90)
        ]
        assert all(kills), "a run finished before it was killed"
        run_to_end(target)
        before = server.count
        counts = judge_generations(generations, judge("cache"), out, chunk_size=5)
        assert (
            counts["judged"] == 0 and server.count == before
        )  # finished: nothing left, nothing sent

    rows = read_jsonl(out)
    pairs = Counter((r["item_id"], r["metric"]) for r in rows)
    assert set(pairs.values()) == {1} and len(pairs) == 120  # each judgment exactly once
    score = lambda rs: {(r["item_id"], r["metric"]): (r["score"], r["reason"]) for r in rs}  # noqa: E731
    assert score(rows) == score(read_jsonl(reference))


# -- emlab reproduce --------------------------------------------------------------------------


def small_study(
    root: Path, methods: tuple[str, ...], seeds: list[int], control: list[str]
) -> StudyConfig:
    """tests/study's reduced study cut down to `methods`, `seeds` and `control` methods."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "study"))
    try:
        from test_reproduce import reduced_study
    finally:
        sys.path.pop(0)
    data = reduced_study(root).model_dump(mode="json")
    data["methods"] = {m: data["methods"][m] for m in methods}
    data |= {"seeds": seeds, "control_methods": control}
    return validate_config(data, StudyConfig)


def study_numbers(study: StudyConfig) -> dict:
    """results.json and every stage's result.json (curves, samples, norms...) without timings
    or stage counters, by path without folder hashes, the output root written as <root>."""
    root = Path(study.output_dir)
    return {
        _unhashed(str(path.relative_to(root))): _drop_timings(
            json.loads(_unhashed(path.read_text().replace(str(root), "<root>")))
        )
        for path in [
            *root.glob("**/result.json"),
            run_path(root, study.name, study) / "results.json",
        ]
    }


def _unhashed(text: str) -> str:
    """`text` without the config hashes of folder names (they depend on the output root)."""
    return re.sub(r"-[0-9a-f]{12}(?=/|\"|$)", "", text)


def _drop_timings(obj: object) -> object:
    if isinstance(obj, dict):
        return {
            k: _drop_timings(v)
            for k, v in obj.items()
            if "seconds" not in k
            and k not in ("stages_computed", "stages_reused", "reused", "output_dir")
        }
    if isinstance(obj, list):
        return [_drop_timings(v) for v in obj]
    return obj


def _stages_done(root: Path) -> int:
    """Finished stages under `root` (os.walk, unlike glob, skips folders renamed while it looks)."""
    return sum("result.json" in files for _, _, files in os.walk(root))


def _solutions(root: Path) -> dict[str, dict]:
    """Every trained solution's tensors by path, without the folder hashes (which depend on
    paths)."""
    return {
        _unhashed(str(path.relative_to(root))): load_file(path)
        for path in root.glob("**/solution/tensors.safetensors")
    }


def check_killed_study_matches(
    tmp_path: Path, methods: tuple[str, ...], seeds: list[int], control: list[str], n_kills: int
) -> None:
    """Run the study straight (in parallel) and killed `n_kills` times at random points inside
    random stages, then resumed; compare results, samples and solutions."""
    straight = small_study(tmp_path / "straight", methods, seeds, control)
    killed = small_study(tmp_path / "killed", methods, seeds, control)
    # chat models and their evaluations (2 worlds); per seed and method: the no-KL and KL runs and
    # both continued runs (without KL from the narrow one, with KL from the general one), each
    # trained and sampled, and the analysis; per seed and control method: one run, trained and
    # sampled
    n_stages = 4 + len(seeds) * (9 * len(methods) + 2 * len(control))
    reference = fork(lambda: reproduce(straight))
    root = tmp_path / "killed"
    rng = random.Random(SEED)
    for at in sorted(
        rng.sample(range(n_stages - 1), n_kills)
    ):  # the last stage and the report are left
        assert kill_when(
            lambda: reproduce(killed), lambda: _stages_done(root), at, rng, jitter=1.0, timeout=600
        )
    run_to_end(lambda: reproduce(killed), timeout=600)
    reference.join(600)
    assert (
        reference.exitcode == 0
        and _stages_done(tmp_path / "straight") == _stages_done(root) == n_stages
    )
    check_same_study(straight, killed)


def check_same_study(straight: StudyConfig, killed: StudyConfig) -> None:
    """The same results, samples (each once) and solutions (bit for bit) in both studies."""
    root = Path(killed.output_dir)
    assert study_numbers(killed) == study_numbers(straight)
    for stage in root.glob("**/samples.jsonl"):  # every sample exactly once
        ids = [r["sample_id"] for r in read_jsonl(stage)]
        assert len(ids) == len(set(ids)), stage
    want, got = _solutions(Path(straight.output_dir)), _solutions(root)
    assert set(want) == set(got) and want
    for stage, tensors in want.items():
        assert all((tensors[k] == got[stage][k]).all() for k in tensors), stage


def _file(name: str, *parts: str) -> Callable[..., bool]:
    """Whether a write is of the file `name` in a folder whose path has every one of `parts`."""
    return lambda path, *args, **kwargs: (
        Path(path).name == name and all(p in str(path) for p in parts)
    )


@pytest.mark.system
def test_reproduce_killed_at_each_hand_over_matches_an_uninterrupted_study(tmp_path):
    """Kills where one process's work is taken over by the next: a chat model after pre-training
    and chat-tuning's last checkpoint (resumed: pre-training as finished, chat-tuning at its
    last step); a fine-tune trained but not recorded as a stage (resumed as finished; its
    answers then sampled from the saved solution instead of the one in memory); answers
    sampled but not recorded; a continued run at its last checkpoint."""
    straight = small_study(tmp_path / "straight", ("lora_r1",), [0], [])
    killed = small_study(tmp_path / "killed", ("lora_r1",), [0], [])
    reference = fork(lambda: reproduce(straight))
    target = lambda: reproduce(killed)  # noqa: E731
    kill_at(
        target, loop_module, "write_text_atomic", _file("DONE", "chat_model_world-", "chat_tune-")
    )
    kill_at(
        target, stages_module, "write_json_atomic", _file("result.json", "train_world_lora_r1_kl_")
    )
    kill_at(
        target,
        stages_module,
        "write_json_atomic",
        _file("result.json", "sample_world_lora_r1_no_kl_seed0-"),
    )
    kill_at(target, loop_module, "write_text_atomic", _file("DONE", "_seed0_continued-"))
    run_to_end(target, timeout=600)
    reference.join(600)
    assert reference.exitcode == 0
    check_same_study(straight, killed)


@pytest.mark.system
def test_reproduce_killed_twice_matches_an_uninterrupted_study(tmp_path):
    check_killed_study_matches(tmp_path, ("lora_r1",), [0], [], n_kills=2)


@pytest.mark.slow
def test_reproduce_killed_five_times_matches_an_uninterrupted_study(tmp_path):
    check_killed_study_matches(
        tmp_path, ("full", "lora_r1", "steering"), [0, 1], ["steering"], n_kills=6
    )
