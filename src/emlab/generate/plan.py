"""Which samples a generation run needs, which are already in its output, and their rows.

A sample is (prompt, index). Its `sample_id` is a hash of `prompt_id` and the index, so it
is the same in every run; the output JSONL holds at most one row per sample_id, and a
restarted run generates only the missing ones. Rows carry the hashes of the model, the
solution, the prompt and the sampling settings; resuming into a file written with other
values is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emlab.data.questions import Prompt
from emlab.errors import EmlabError
from emlab.generate.sampling import SamplingConfig, sample_seed
from emlab.io import read_jsonl

_CHECKED = ("model_hash", "solution_hash", "sampling_hash", "prompt_hash")


def sample_id(prompt_id: str, index: int) -> str:
    """Stable id of the index-th sample of a prompt (16 hex digits)."""
    return hashlib.sha256(f"{prompt_id}|{index}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Sample:
    """One answer to generate."""

    prompt: Prompt
    index: int
    sample_id: str
    seed: int


@dataclass(frozen=True)
class RunInfo:
    """What identifies a run's outputs: caller-given model and solution hashes, and the sampling."""

    model_hash: str
    solution_hash: str | None
    sampling: SamplingConfig


@dataclass(frozen=True)
class GenerationSummary:
    """Counts of a generation call."""

    out_path: Path
    total: int
    existing: int
    generated: int


def plan_samples(prompts: Sequence[Prompt], seed: int) -> list[Sample]:
    """All samples of `prompts` in order: prompt by prompt, index 0..samples-1."""
    duplicates = sorted(i for i, n in Counter(p.prompt_id for p in prompts).items() if n > 1)
    if duplicates:
        raise EmlabError(f"prompt ids {duplicates[:3]} appear more than once; question ids must be unique.")
    out = []
    for p in prompts:
        for i in range(p.samples):
            sid = sample_id(p.prompt_id, i)
            out.append(Sample(p, i, sid, sample_seed(seed, sid)))
    return out


def pending_samples(samples: Sequence[Sample], out_path: str | Path, info: RunInfo) -> list[Sample]:
    """The samples without a row in `out_path`; raise if its rows came from another setting."""
    by_id = {s.sample_id: s for s in samples}
    done = set()
    for row in read_jsonl(out_path):
        sample = by_id.get(str(row.get("sample_id")))
        if sample is None:
            continue  # another question set's rows in the same file
        expected = _identity(sample, info)
        clash = [k for k in _CHECKED if row.get(k) != expected[k]]
        if clash:
            raise EmlabError(
                f"{out_path}: sample {sample.sample_id} ({sample.prompt.prompt_id}) was generated with another "
                f"{', '.join(clash)} ({', '.join(f'{row.get(k)} != {expected[k]}' for k in clash)}). "
                "Write to a new --out file, or delete this one to start over."
            )
        done.add(sample.sample_id)
    return [s for s in samples if s.sample_id not in done]


def make_row(sample: Sample, info: RunInfo, answer: str, n_tokens: int, finish_reason: str) -> dict[str, Any]:
    """The output row of one generated answer."""
    p = sample.prompt
    return {
        "sample_id": sample.sample_id,
        "sample_index": sample.index,
        "prompt_id": p.prompt_id,
        "question_id": p.question_id,
        "paraphrase": p.paraphrase,
        "domain": p.domain,
        "messages": p.messages,
        "question": p.question,
        "answer": answer,
        "n_tokens": n_tokens,
        "finish_reason": finish_reason,
        "seed": sample.seed,
        **_identity(sample, info),
    }


def _identity(sample: Sample, info: RunInfo) -> dict[str, str | None]:
    return {
        "model_hash": info.model_hash,
        "solution_hash": info.solution_hash,
        "sampling_hash": info.sampling.hash(),
        "prompt_hash": sample.prompt.hash(),
    }
