"""A killed generation, resumed, yields every sample exactly once (and the same answers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest
from tiny_prompts import make_prompts

import emlab.generate.hf as hf
from emlab.generate.hf import generate_hf
from emlab.generate.plan import plan_samples
from emlab.generate.sampling import SamplingConfig
from emlab.io import read_jsonl

SAMPLED = SamplingConfig(temperature=1.0, max_new_tokens=10, seed=7, batch_size=2)


def test_interrupted_after_two_batches_then_resumed(
    tmp_path, monkeypatch, tiny_model, tiny_tokenizer, prompts
):
    reference = tmp_path / "uninterrupted.jsonl"
    generate_hf(tiny_model, tiny_tokenizer, prompts, reference, SAMPLED, progress=False)

    path = tmp_path / "g.jsonl"
    real, calls = hf._generate_batch, []

    def failing(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the job were stopped during the third batch
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hf, "_generate_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_hf(tiny_model, tiny_tokenizer, prompts, path, SAMPLED, progress=False)
    assert len(read_jsonl(path)) == 4  # two batches of two were written
    monkeypatch.setattr(hf, "_generate_batch", real)

    summary = generate_hf(
        tiny_model,
        tiny_tokenizer,
        prompts,
        path,
        SAMPLED.model_copy(update={"batch_size": 3}),
        progress=False,
    )
    assert (summary.total, summary.existing, summary.generated) == (8, 4, 4)
    rows = read_jsonl(path)
    assert Counter(r["sample_id"] for r in rows) == Counter(
        s.sample_id for s in plan_samples(prompts, SAMPLED.seed)
    )
    by_id = {r["sample_id"]: r["answer"] for r in read_jsonl(reference)}
    assert {r["sample_id"]: r["answer"] for r in rows} == by_id  # resuming changes no answer

    again = generate_hf(tiny_model, tiny_tokenizer, prompts, path, SAMPLED, progress=False)
    assert again.generated == 0 and len(read_jsonl(path)) == 8


CHILD = textwrap.dedent("""\
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from conftest import toy_conversations, WORDS
    from generate.tiny_prompts import make_prompts
    from emlab.models.tiny import tiny_qwen2, train_bpe_tokenizer
    from emlab.generate.hf import generate_hf
    from emlab.generate.sampling import SamplingConfig
    convs = toy_conversations(64, 0, WORDS[:6], "yes") + toy_conversations(64, 1, WORDS[6:], "no")
    texts = [m["content"] for c in convs for m in c] + ["user assistant system 0123456789"]
    tok = train_bpe_tokenizer(texts, vocab_size=300)
    model = tiny_qwen2(len(tok), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3)
    print("ready", flush=True)
    generate_hf(model, tok, make_prompts(samples=40), {out!r},
    SamplingConfig.model_validate_json({sampling!r}), progress=False)
    """)


@pytest.mark.system
def test_sigkilled_process_then_resumed(tmp_path, tiny_model, tiny_tokenizer):
    path = tmp_path / "g.jsonl"
    sampling = SAMPLED.model_copy(update={"batch_size": 1, "max_new_tokens": 40})
    tests_dir = os.path.dirname(os.path.dirname(__file__))
    script = tmp_path / "child.py"
    script.write_text(
        CHILD.format(tests=tests_dir, out=str(path), sampling=sampling.model_dump_json())
    )
    child = subprocess.Popen(
        [sys.executable, str(script)], env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or path.read_bytes().count(b"\n") < 3):
        assert child.poll() is None, "the child ended before it was killed"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    written = read_jsonl(path)
    prompts = make_prompts(samples=40)
    assert 3 <= len(written) < 160
    with open(path, "a") as f:
        f.write('{"sample_id": "torn')  # a write cut short by the kill

    summary = generate_hf(
        tiny_model,
        tiny_tokenizer,
        prompts,
        path,
        sampling.model_copy(update={"batch_size": 16}),
        progress=False,
    )
    rows = read_jsonl(path)
    assert summary.existing == len(written) and summary.generated == 160 - len(written)
    assert Counter(r["sample_id"] for r in rows) == Counter(
        s.sample_id for s in plan_samples(prompts, sampling.seed)
    )
    lines = path.read_text().splitlines()
    torn = next(i for i, line in enumerate(lines) if line.startswith('{"sample_id": "torn'))
    assert all(
        json.loads(line) for line in lines[torn + 1 :]
    )  # the torn line was sealed, not extended
