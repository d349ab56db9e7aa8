"""HF generation: left padding, explicit sampling settings, per-sample seeds, stop tokens,
solutions."""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager

import pytest
import torch

from emlab.errors import EmlabError
from emlab.generate.chat_tokens import end_of_turn_id, prompt_token_ids, stop_token_ids
from emlab.generate.hf import PerSampleSampler, generate_hf
from emlab.generate.plan import answer_identity, sample_id
from emlab.generate.sampling import SamplingConfig
from emlab.io import append_jsonl, read_jsonl
from emlab.models.chat import pad_sequences

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=12)
SAMPLED = SamplingConfig(temperature=1.0, max_new_tokens=12, seed=3)


def answers(path) -> dict[str, str]:
    return {r["sample_id"]: r["answer"] for r in read_jsonl(path)}


def run(model, tok, prompts, path, sampling, **kwargs) -> dict[str, str]:
    generate_hf(model, tok, prompts, path, sampling, progress=False, **kwargs)
    return answers(path)


def _draw(sampling: SamplingConfig, logits: list[float], n: int, calls: int = 1) -> torch.Tensor:
    """Tokens drawn by n rows (seeds 0..n-1) with the same logits, one column per call # (n,
    calls)."""
    sampler = PerSampleSampler(range(n), sampling)
    scores = torch.tensor([logits]).expand(n, -1).clone()
    columns = []
    for _ in range(calls):
        out = sampler(torch.zeros((n, 1), dtype=torch.long), scores.clone())
        assert ((out == 0).sum(-1) == 1).all() and (
            torch.isinf(out).sum(-1) == len(logits) - 1
        ).all()  # one-hot
        columns.append(out.argmax(-1))
    return torch.stack(columns, dim=1)


def test_per_sample_sampler_draws_from_the_warped_distribution():
    n, logits = 6000, [2.0, 1.0, 0.0, -1.0, float("-inf")]
    drawn = _draw(SamplingConfig(max_new_tokens=2), logits, n, calls=2)
    expected = torch.softmax(
        torch.tensor(logits, dtype=torch.float64), dim=0
    )  # 0.64, 0.24, 0.09, 0.03, 0
    for column in drawn.T:  # each call uses each row's next uniform
        freq = torch.bincount(column, minlength=5).double() / n
        assert (freq - expected).abs().max() < 0.025  # > 4 standard deviations at n = 6000
        assert freq[4] == 0
    assert (
        drawn[:, 0] != drawn[:, 1]
    ).float().mean() > 0.4  # the two calls draw independently (p = 0.53)
    assert torch.equal(
        drawn, _draw(SamplingConfig(max_new_tokens=2), logits, n, calls=2)
    )  # seeds fix the draws
    top2 = _draw(SamplingConfig(max_new_tokens=1, top_k=2), logits, n)[:, 0]
    assert set(top2.tolist()) == {0, 1}
    assert (top2 == 0).double().mean() == pytest.approx(1 / (1 + math.exp(-1)), abs=0.025)


def test_left_padding_gives_the_greedy_answers_of_one_at_a_time(
    tmp_path, tiny_model, tiny_tokenizer, prompts
):
    lengths = {len(prompt_token_ids(tiny_tokenizer, p.messages)) for p in prompts}
    assert len(lengths) > 2  # the batch really is padded
    batched = run(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "b.jsonl",
        GREEDY.model_copy(update={"batch_size": 8}),
    )
    single = run(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "s.jsonl",
        GREEDY.model_copy(update={"batch_size": 1}),
    )
    assert batched == single
    assert (
        len(set(batched.values())) >= 3 and max(len(a) for a in batched.values()) > 5
    )  # real, varied answers


def test_rows_have_the_documented_fields(tmp_path, tiny_model, tiny_tokenizer, prompts):
    generate_hf(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "g.jsonl",
        GREEDY,
        model_hash="m1",
        solution_hash="s1",
        progress=False,
    )
    rows = read_jsonl(tmp_path / "g.jsonl")
    assert len(rows) == sum(p.samples for p in prompts) == 8
    row = next(r for r in rows if r["prompt_id"] == "b/0" and r["sample_index"] == 1)
    assert row["sample_id"] == sample_id("b/0", 1)
    assert row["question_id"] == "b" and row["paraphrase"] == 0 and row["question"] == "a mat"
    assert row["messages"][0] == {"role": "system", "content": "yes the cat sat on a mat"}
    assert (
        row["model_hash"] == "m1"
        and row["solution_hash"] == "s1"
        and row["sampling_hash"] == GREEDY.hash()
    )
    assert row["prompt_hash"] == prompts[2].hash() and row["finish_reason"] in ("stop", "length")
    assert 0 <= row["n_tokens"] <= GREEDY.max_new_tokens
    assert {r["domain"] for r in rows} == {None, "home"}


def test_rows_carry_their_provenance_and_answer_ids_that_include_it(
    tmp_path, tiny_model, tiny_tokenizer, prompts
):
    for solution in ("A", "B"):  # the same model and answers, two solution hashes
        generate_hf(
            tiny_model,
            tiny_tokenizer,
            prompts,
            tmp_path / f"{solution}.jsonl",
            GREEDY,
            model_hash="m1",
            solution_hash=solution,
            model_name="tiny-qwen",
            progress=False,
        )
    rows_a, rows_b = read_jsonl(tmp_path / "A.jsonl"), read_jsonl(tmp_path / "B.jsonl")
    row = rows_a[0]
    assert (
        row["model"] == "tiny-qwen"
        and row["question_set"] == "tiny"
        and len(row["question_set_hash"]) == 12
    )
    assert row["question_set_hash"] == prompts[0].question_set_hash
    assert row["sampling"] == GREEDY.model_dump(mode="json", exclude={"batch_size"})
    assert row["answer_hash"] == hashlib.sha256(row["answer"].encode()).hexdigest()[:16]
    assert {k: row[k] for k in ("provenance", "answer_hash", "answer_id")} == answer_identity(row)
    # the same sample ids and answer texts, but other answers: no shared answer_id or provenance
    assert [r["sample_id"] for r in rows_a] == [r["sample_id"] for r in rows_b]
    assert [r["answer"] for r in rows_a] == [r["answer"] for r in rows_b]
    assert not {r["answer_id"] for r in rows_a} & {r["answer_id"] for r in rows_b}
    assert {r["provenance"] for r in rows_a} != {r["provenance"] for r in rows_b}
    # a file written before rows carried provenance is not resumed into (it could be other answers)
    old = tmp_path / "old.jsonl"
    old_fields = (
        "model",
        "question_set",
        "question_set_hash",
        "sampling",
        "provenance",
        "answer_hash",
        "answer_id",
    )
    append_jsonl(old, [{k: v for k, v in r.items() if k not in old_fields} for r in rows_a[:4]])
    with pytest.raises(
        EmlabError, match=r"another model, question_set_hash .*older emlab.*new --out"
    ):
        generate_hf(
            tiny_model,
            tiny_tokenizer,
            prompts,
            old,
            GREEDY,
            model_hash="m1",
            solution_hash="A",
            model_name="tiny-qwen",
            progress=False,
        )


def test_sampled_answers_do_not_depend_on_batch_composition(
    tmp_path, tiny_model, tiny_tokenizer, prompts
):
    one = run(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "1.jsonl",
        SAMPLED.model_copy(update={"batch_size": 1}),
    )
    three = run(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "3.jsonl",
        SAMPLED.model_copy(update={"batch_size": 3}),
    )
    assert one == three
    by_prompt = {}
    for r in read_jsonl(tmp_path / "1.jsonl"):
        by_prompt.setdefault(r["prompt_id"], []).append(r["answer"])
    assert any(len(set(v)) > 1 for v in by_prompt.values())  # samples of one prompt differ
    other_seed = run(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "o.jsonl",
        SAMPLED.model_copy(update={"seed": 4}),
    )
    assert other_seed != one


def test_checkpoint_generation_defaults_do_not_leak(tmp_path, tiny_model, tiny_tokenizer, prompts):
    clean = run(tiny_model, tiny_tokenizer, prompts, tmp_path / "clean.jsonl", SAMPLED)
    gc = tiny_model.generation_config
    gc.do_sample, gc.temperature, gc.top_k, gc.top_p, gc.min_p = True, 0.05, 1, 0.1, 0.9
    gc.repetition_penalty, gc.no_repeat_ngram_size = 5.0, 1
    gc.suppress_tokens = list(range(10, 200))
    saved = gc.to_dict()
    polluted = run(tiny_model, tiny_tokenizer, prompts, tmp_path / "polluted.jsonl", SAMPLED)
    assert polluted == clean
    assert tiny_model.generation_config.to_dict() == saved  # restored after the call


def test_sampling_fields_take_effect(tmp_path, tiny_model, tiny_tokenizer, prompts):
    greedy = run(tiny_model, tiny_tokenizer, prompts, tmp_path / "g.jsonl", GREEDY)
    top1 = run(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "k.jsonl",
        SAMPLED.model_copy(update={"top_k": 1}),
    )
    assert top1 == greedy  # top_k=1 sampling is greedy decoding
    penalised = run(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "p.jsonl",
        GREEDY.model_copy(update={"repetition_penalty": 10.0}),
    )
    assert penalised != greedy


class LogitBoost:
    """A stand-in solution: within `applied`, adds `amount` to one token's logit."""

    def __init__(self, token_id: int, amount: float = 100.0) -> None:
        self.token_id, self.amount = token_id, amount

    @contextmanager
    def applied(self, model):
        def hook(module, args, output):
            output = output.clone()
            output[..., self.token_id] += self.amount
            return output

        handle = model.lm_head.register_forward_hook(hook)
        try:
            yield model
        finally:
            handle.remove()


def test_stops_at_end_of_turn_and_reports_length(tmp_path, tiny_model, tiny_tokenizer, prompts):
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(tiny_tokenizer) == eot and stop_token_ids(tiny_tokenizer) == [eot]
    generate_hf(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "stop.jsonl",
        GREEDY,
        solution=LogitBoost(eot),
        progress=False,
    )
    assert {
        (r["answer"], r["n_tokens"], r["finish_reason"])
        for r in read_jsonl(tmp_path / "stop.jsonl")
    } == {("", 0, "stop")}
    cat = tiny_tokenizer.convert_tokens_to_ids("cat")
    generate_hf(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "len.jsonl",
        GREEDY,
        solution=LogitBoost(cat),
        progress=False,
    )
    rows = read_jsonl(tmp_path / "len.jsonl")
    assert {(r["answer"], r["n_tokens"], r["finish_reason"]) for r in rows} == {
        ("cat" * 12, 12, "length")
    }


class SteeringHook:
    """A stand-in steering vector: adds `vector` to decoder layer 0's output (every row and
    position)."""

    def __init__(self, vector: torch.Tensor) -> None:
        self.vector = vector

    @contextmanager
    def applied(self, model):
        handle = model.model.layers[0].register_forward_hook(lambda m, a, out: out + self.vector)
        try:
            yield model
        finally:
            handle.remove()


def test_steering_solution_changes_every_answer_and_is_removed_after(
    tmp_path, tiny_model, tiny_tokenizer, prompts
):
    base = run(tiny_model, tiny_tokenizer, prompts, tmp_path / "base.jsonl", GREEDY)
    vector = 8.0 * torch.randn(
        tiny_model.config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    steered = run(
        tiny_model,
        tiny_tokenizer,
        prompts,
        tmp_path / "steered.jsonl",
        GREEDY,
        solution=SteeringHook(vector),
        solution_hash="v",
    )
    assert all(steered[k] != base[k] for k in base)  # every row of every batch is steered
    again = run(tiny_model, tiny_tokenizer, prompts, tmp_path / "again.jsonl", GREEDY)
    assert again == base  # the hook is gone


def test_emlab_steering_solution_plugs_in(tmp_path, tiny_model, tiny_tokenizer, prompts):
    from emlab.solutions import SteeringSolution

    base = run(tiny_model, tiny_tokenizer, prompts, tmp_path / "base.jsonl", GREEDY)
    v = torch.randn(tiny_model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    solution = SteeringSolution(v, "layer", 0, alpha=8.0)
    steered = run(
        tiny_model, tiny_tokenizer, prompts, tmp_path / "steered.jsonl", GREEDY, solution=solution
    )
    assert steered != base
    assert {r["solution_hash"] for r in read_jsonl(tmp_path / "steered.jsonl")} == {solution.hash()}


def test_resuming_with_other_settings_is_refused(tmp_path, tiny_model, tiny_tokenizer, prompts):
    path = tmp_path / "g.jsonl"
    generate_hf(
        tiny_model, tiny_tokenizer, prompts[:1], path, GREEDY, model_hash="m", progress=False
    )
    with pytest.raises(EmlabError, match="sampling_hash"):
        generate_hf(
            tiny_model, tiny_tokenizer, prompts, path, SAMPLED, model_hash="m", progress=False
        )
    with pytest.raises(EmlabError, match="model_hash"):
        generate_hf(
            tiny_model, tiny_tokenizer, prompts, path, GREEDY, model_hash="other", progress=False
        )
    summary = generate_hf(
        tiny_model,
        tiny_tokenizer,
        prompts,
        path,
        GREEDY.model_copy(update={"batch_size": 3}),
        model_hash="m",
        progress=False,
    )
    assert (summary.existing, summary.generated) == (2, 6)  # batch size is not part of the identity


def test_left_pad_shapes():
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_smollm2_template_end_of_turn(smollm2_tokenizer):
    eot = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(smollm2_tokenizer) == eot
    assert eot in stop_token_ids(smollm2_tokenizer)


@pytest.mark.slow
def test_smollm2_batched_greedy_matches_one_at_a_time(tmp_path):
    """A real model and template (SmolLM2-135M-Instruct): left padding changes no greedy answer."""
    from emlab.data.questions import expand, load_question_set
    from emlab.models.config import ModelConfig
    from emlab.models.load import load_model

    model, tok = load_model(ModelConfig(name_or_path="smollm2"))
    prompts = expand(load_question_set("general"), samples_per_paraphrase=1)[::9][:3]
    sampling = GREEDY.model_copy(update={"max_new_tokens": 8})
    batched = run(
        model, tok, prompts, tmp_path / "b.jsonl", sampling.model_copy(update={"batch_size": 3})
    )
    single = run(
        model, tok, prompts, tmp_path / "s.jsonl", sampling.model_copy(update={"batch_size": 1})
    )
    assert batched == single and all(batched.values())


def test_lora_solution_generates_like_peft_with_the_adapter(
    tmp_path, tiny_model, tiny_tokenizer, prompts
):
    import copy

    from peft import LoraConfig, get_peft_model

    from emlab.solutions import LoraSolution

    torch.manual_seed(2)
    peft_model = get_peft_model(
        copy.deepcopy(tiny_model),
        LoraConfig(
            r=2, lora_alpha=16.0, target_modules=["q_proj", "down_proj"], init_lora_weights=False
        ),
    )
    solution = LoraSolution.from_peft(peft_model)
    base = run(tiny_model, tiny_tokenizer, prompts, tmp_path / "base.jsonl", GREEDY)
    with_lora = run(
        tiny_model, tiny_tokenizer, prompts, tmp_path / "lora.jsonl", GREEDY, solution=solution
    )
    merged = run(
        peft_model.merge_and_unload(), tiny_tokenizer, prompts, tmp_path / "merged.jsonl", GREEDY
    )
    assert with_lora != base
    assert with_lora == merged  # emlab's applied LoRA generates what peft's merged adapter does
    assert run(tiny_model, tiny_tokenizer, prompts, tmp_path / "after.jsonl", GREEDY) == base


def test_sampling_warpers_run_once_per_step(
    tmp_path, tiny_model, tiny_tokenizer, prompts, monkeypatch
):
    """The per-sample sampler applies top-p and draws; generate must not re-run the warpers (a
    top-p warper sorts every row's vocabulary) nor draw again on its one-hot scores."""
    from transformers import TopPLogitsWarper

    calls = []
    original = TopPLogitsWarper.__call__
    monkeypatch.setattr(
        TopPLogitsWarper,
        "__call__",
        lambda self, ids, scores: calls.append(1) or original(self, ids, scores),
    )
    drawn, multinomial = [], torch.multinomial
    monkeypatch.setattr(
        torch, "multinomial", lambda *a, **k: drawn.append(1) or multinomial(*a, **k)
    )
    sampling = SAMPLED.model_copy(update={"top_p": 0.9, "max_new_tokens": 5, "batch_size": 64})
    generate_hf(
        tiny_model, tiny_tokenizer, prompts[:1], tmp_path / "a.jsonl", sampling, progress=False
    )
    steps = max(r["n_tokens"] for r in read_jsonl(tmp_path / "a.jsonl"))
    assert steps >= 1 and len(calls) <= steps and drawn == []
