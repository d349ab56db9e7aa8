"""Pre-training importance: masked KL on text, norm grid, exact-norm random baselines, text
sources."""

from __future__ import annotations

import importlib.util
import json
import math

import pandas as pd
import pytest
import torch

from emlab.analysis.baselines import random_solution
from emlab.analysis.importance import KLEvaluator, pretraining_importance
from emlab.analysis.text import chunk_texts, load_texts, pad_chunks, pydoc_texts, text_batches
from emlab.errors import DataError, EmlabError
from emlab.solutions import FullDelta
from emlab.train.losses import token_kl


@pytest.fixture(scope="module")
def chunks(tiny_tokenizer):
    """Text chunks of unequal lengths, so that batching them pads some."""
    full = chunk_texts(tiny_tokenizer, pydoc_texts()[:6], seq_len=24, max_chunks=6)
    return [c[:n] for c, n in zip(full, [24, 9, 17, 3, 24, 12], strict=True)]


def test_kl_is_zero_at_norm_zero_and_grows_with_norm(
    model, tiny_tokenizer, lora_general, lora_narrow
):
    batches = text_batches(
        tiny_tokenizer, pydoc_texts()[:4], seq_len=32, batch_size=4, max_chunks=8
    )
    evaluator = KLEvaluator(model, batches)
    result = pretraining_importance(
        evaluator,
        {"general": lora_general, "narrow": lora_narrow},
        norms=[0, 1, 3, 9],
        random_seeds=(0, 1),
    )
    assert set(result.kl) == {"general", "narrow", "random"}
    assert len(result.kl["random"]) == 2 and len(result.kl["general"]) == 1
    for name, rows in result.kl.items():
        for row in rows:
            assert row[0] == pytest.approx(0.0, abs=1e-9), name
            assert all(b > a for a, b in zip(row, row[1:], strict=False)), (name, row)
    # one value by hand: the narrow direction rescaled to norm 3
    by_hand = evaluator.evaluate(lora_narrow.scaled(3 / lora_narrow.norm()))
    assert result.kl["narrow"][0][2] == pytest.approx(by_hand, rel=1e-6)
    assert result.solution_norms["general"] == pytest.approx(lora_general.norm())
    data = json.loads(json.dumps(result.to_json()))
    assert data["kl_summary"]["random"]["mean"][3] == pytest.approx(
        sum(r[3] for r in result.kl["random"]) / 2
    )


def test_padding_does_not_change_the_kl(model, chunks, steering):
    """Token-weighted KL over real tokens: the same whether chunks are padded together,
    alone, or with extra padding columns; averaging over padding would change it."""
    together = KLEvaluator(model, pad_chunks(chunks, pad_id=0, batch_size=6)).evaluate(steering)
    alone = KLEvaluator(model, pad_chunks(chunks, pad_id=0, batch_size=1)).evaluate(steering)
    wide = pad_chunks(chunks, pad_id=0, batch_size=6)[0]
    wide = {
        k: torch.cat([v, torch.zeros(v.shape[0], 7, dtype=v.dtype)], dim=1) for k, v in wide.items()
    }
    padded = KLEvaluator(model, [wide]).evaluate(steering)
    assert together == pytest.approx(alone, rel=1e-5)
    assert padded == pytest.approx(alone, rel=1e-5)
    # the reference's defect: averaging over every position, padding included, differs
    with torch.no_grad():
        base = model(**wide).logits
        with steering.applied(model):
            tuned = model(**wide).logits
    naive = float(token_kl(tuned[:, :-1].flatten(0, 1), base[:, :-1].flatten(0, 1)).mean())
    assert abs(naive - alone) > 1e-3 * alone


@pytest.mark.parametrize("kind", ["lora", "steering", "full"])
def test_random_baseline_has_exactly_the_requested_norm(lora_general, steering, kind):
    like = {
        "lora": lora_general,
        "steering": steering,
        "full": FullDelta({"w": torch.ones(3, 4), "b": torch.ones(5)}),
    }[kind]
    sol = random_solution(like, 2.5, seed=7)
    assert type(sol) is type(like)
    # exact to double precision (a steering norm is computed from the float32 vector alpha * m * v)
    assert sol.norm() == pytest.approx(2.5, rel=1e-7 if kind == "steering" else 1e-12)
    assert {k: v.shape for k, v in sol.tensors().items()} == {
        k: v.shape for k, v in like.tensors().items()
    }
    if kind == "lora":  # by hand: || multiplier * alpha / r * B @ A ||_F summed in quadrature
        total = sum(
            float((sol.multiplier * 4.0 / 2 * b.double() @ a.double()).pow(2).sum())
            for a, b in sol.adapters.values()
        )
        assert math.sqrt(total) == pytest.approx(2.5, rel=1e-9)
    if kind == "steering":  # the added vector itself has norm 2.5 (not sqrt(d) times more)
        assert float(sol.vector.norm()) == pytest.approx(2.5, rel=1e-6)
    other = random_solution(like, 2.5, seed=8)
    assert not all(torch.equal(other.tensors()[k], v) for k, v in sol.tensors().items())


def test_text_sources(tmp_path, tiny_tokenizer):
    (tmp_path / "a.txt").write_text("first document text")
    (tmp_path / "b.jsonl").write_text('{"text": "second"}\n\n{"text": "third"}\n')
    pd.DataFrame({"text": ["fourth", "fifth"]}).to_parquet(tmp_path / "c.parquet")
    assert load_texts(tmp_path / "b.jsonl") == ["second", "third"]
    assert load_texts(tmp_path) == ["first document text", "second", "third", "fourth", "fifth"]
    (tmp_path / "bad.jsonl").write_text('{"content": "x"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_texts(tmp_path / "bad.jsonl")
    docs = load_texts("pydoc", n_docs=1000)
    assert len(docs) >= 70 and sum(map(len, docs)) > 400_000
    if importlib.util.find_spec("datasets") is None:
        with pytest.raises(EmlabError, match="pip install datasets"):
            load_texts("HuggingFaceFW/fineweb", n_docs=3)


def test_chunks_cover_documents_and_masks_mark_real_tokens(tiny_tokenizer):
    texts = pydoc_texts()[:3]
    chunks = chunk_texts(tiny_tokenizer, texts, seq_len=50, max_chunks=10_000)
    first = tiny_tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    n_first = math.ceil(len(first) / 50)
    assert [
        t for c in chunks[:n_first] for t in c
    ] == first  # each document cut in order, not merged
    assert all(2 <= len(c) <= 50 for c in chunks)
    batches = text_batches(tiny_tokenizer, texts, seq_len=50, batch_size=4, max_chunks=9)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 1]
    assert [int(m) for b in batches for m in b["attention_mask"].sum(1)] == [
        len(c) for c in chunks[:9]
    ]


def test_kl_evaluator_equals_token_kl_by_position(model, chunks, lora_general, steering):
    """The per-batch closed form gives token_kl's KL(base || tuned) over the real positions, for a
    LoRA alone and for steering vectors sharing a forward pass (row blocks); the base costs no pass.
    """
    batches = pad_chunks(chunks, pad_id=0, batch_size=4)  # padded rows in both batches
    steered = [steering.scaled(m) for m in (0.5, 1.0, 2.0)]
    evaluator = KLEvaluator(model, batches, max_rows=12)  # the three vectors in one pass of 4 rows
    passes = []
    hook = model.register_forward_hook(lambda *_: passes.append(1))
    assert evaluator.evaluate(None) == 0.0 and evaluator.evaluate(lora_general.scaled(0.0)) == 0.0
    assert passes == []
    got = evaluator.evaluate_many([lora_general, *steered])
    hook.remove()
    assert len(passes) == 2 * 3  # per batch: the base, the LoRA, one pass for the three vectors

    def by_hand(solution) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for b in batches:
                real = b["attention_mask"][:, 1:].bool() & b["attention_mask"][:, :-1].bool()
                base = model(**b).logits[:, :-1][real]
                with solution.applied(model):
                    tuned = model(**b).logits[:, :-1][real]
                total += float(token_kl(tuned.double(), base.double()).sum())
                count += int(real.sum())
        return total / count

    expected = [by_hand(s) for s in [lora_general, *steered]]
    assert all(e > 1e-4 for e in expected)
    assert got == pytest.approx(expected, rel=1e-6)
