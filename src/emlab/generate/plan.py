"""Which samples a generation run needs, which are already in its output, and their rows.

A sample is (prompt, index). Its `sample_id` is a hash of `prompt_id` and the index, so it
is the same in every run (and for every model and solution); the output JSONL holds at most
one row per sample_id, and a restarted run generates only the missing ones.

Every row carries its provenance: the model (`model` name and `model_hash`), the solution
(`solution_hash`, None for the base model), the question set (`question_set` name and
`question_set_hash` of its content), the sampling settings (`sampling` and `sampling_hash`)
and the prompt (`prompt_hash`); `provenance` is a hash of the fields that identify the
answers' source (`PROVENANCE_FIELDS`). The answer itself is identified by `answer_id`, a hash
of the provenance, the sample id and `answer_hash` (the answer text's hash), so judgments of
different models, solutions or answers never share an id. Resuming into a file written with
other values is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emlab.config import config_hash
from emlab.data.questions import Prompt
from emlab.errors import EmlabError
from emlab.generate.sampling import SamplingConfig, sample_seed
from emlab.io import read_jsonl

PROVENANCE_FIELDS = ("model", "model_hash", "solution_hash", "question_set_hash", "sampling_hash")
"""Row fields that identify where answers come from (their hash is the row's `provenance`)."""
_CHECKED = (*PROVENANCE_FIELDS, "prompt_hash")


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
    """What identifies a run's outputs: the model's name and caller-given hash, the solution hash,
    the sampling."""

    model_name: str
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
        raise EmlabError(
            f"prompt ids {duplicates[:3]} appear more than once; question ids must be unique."
        )
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
            older = (
                " (its rows predate answer provenance: written by an older emlab)"
                if any(k not in row for k in clash)
                else ""
            )
            raise EmlabError(
                f"{out_path}: sample {sample.sample_id} ({sample.prompt.prompt_id}) was generated"
                f" with another {', '.join(clash)}"
                f" ({', '.join(f'{row.get(k)} != {expected[k]}' for k in clash)}){older}. Write to"
                " a new --out file, or delete this one to start over."
            )
        done.add(sample.sample_id)
    return [s for s in samples if s.sample_id not in done]


def make_row(
    sample: Sample, info: RunInfo, answer: str, n_tokens: int, finish_reason: str
) -> dict[str, Any]:
    """The output row of one generated answer, with its provenance and `answer_id` (see the module
    doc)."""
    p = sample.prompt
    row = {
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
        "question_set": p.question_set,
        "sampling": info.sampling.model_dump(mode="json", exclude={"batch_size"}),
        **_identity(sample, info),
    }
    return {**row, **answer_identity(row)}


def answer_identity(row: dict[str, Any]) -> dict[str, str]:
    """`provenance`, `answer_hash` and `answer_id` of a generation row, derived from its content.

    provenance = hash of the row's PROVENANCE_FIELDS (a missing field counts as None, so rows
    of older or hand-written files get one too); answer_hash = sha256 of the answer text (16 hex
    digits); answer_id = hash of (provenance, sample_id, answer_hash) (16 hex digits). Needs
    `sample_id` and `answer`.
    """
    provenance = config_hash([row.get(k) for k in PROVENANCE_FIELDS])
    answer_hash = hashlib.sha256(str(row["answer"]).encode("utf-8")).hexdigest()[:16]
    answer_id = hashlib.sha256(
        f"{provenance}|{row['sample_id']}|{answer_hash}".encode()
    ).hexdigest()[:16]
    return {"provenance": provenance, "answer_hash": answer_hash, "answer_id": answer_id}


def _identity(sample: Sample, info: RunInfo) -> dict[str, str | None]:
    return {
        "model": info.model_name,
        "model_hash": info.model_hash,
        "solution_hash": info.solution_hash,
        "question_set_hash": sample.prompt.question_set_hash,
        "sampling_hash": info.sampling.hash(),
        "prompt_hash": sample.prompt.hash(),
    }
