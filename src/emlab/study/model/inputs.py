"""Inputs of the real-model study: checked paths, file digests (stage keys), data splits, prompts,
texts."""

from __future__ import annotations

import hashlib
from pathlib import Path

from emlab.analysis.text import OFFLINE, load_texts
from emlab.data.chat import read_chat_jsonl, split_heldout
from emlab.data.questions import Prompt, expand, load_question_set, shipped_question_sets
from emlab.errors import ConfigError
from emlab.models.chat import Conversation
from emlab.study.model.config import ModelStudyConfig


def check_inputs(cfg: ModelStudyConfig, source: str = "the study config") -> None:
    """Raise a ConfigError naming the field and the path of every input that is missing."""
    needed = {"data.train": cfg.data.train, "data.ood": cfg.data.ood, "judge": cfg.judge}
    needed |= {
        f"data.pretraining[{i}]": p for i, p in enumerate(cfg.data.pretraining) if p != OFFLINE
    }
    for field, name in (
        ("in_domain_questions", cfg.in_domain_questions),
        ("general_questions", cfg.general_questions),
    ):
        if name not in shipped_question_sets():
            needed[field] = name
    missing = [f"  - {field}: {path}" for field, path in needed.items() if not Path(path).exists()]
    if missing:
        raise ConfigError(
            f"{source}: input file(s) not found (cwd: {Path.cwd()}):\n"
            + "\n".join(missing)
            + '\nemlab ships no training data: put your chat JSONL files (one {"messages": [...]}'
            " per line) and question sets at these paths, or point the fields at them (`--set"
            " data.train=...`)."
        )


def digest(path: str | Path) -> str:
    """sha256 (16 hex digits) of a file's bytes, or of a folder's files and names ('pydoc': its
    name)."""
    if str(path) == OFFLINE:
        return OFFLINE
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if f.is_file():
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            with f.open("rb") as stream:
                for block in iter(lambda s=stream: s.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def narrow_split(cfg: ModelStudyConfig) -> tuple[list[Conversation], list[Conversation]]:
    """(trained, held-out) conversations of `data.train`, split by `data.heldout_fraction` and
    `data.split_seed`."""
    return split_heldout(
        read_chat_jsonl(cfg.data.train), cfg.data.heldout_fraction, cfg.data.split_seed
    )


def pretraining_documents(sources: list[str], n: int) -> list[str]:
    """The first `n` documents of the sources: a .txt file holds one document per non-empty line."""
    docs: list[str] = []
    for source in sources:
        if Path(source).suffix == ".txt":
            docs += [
                line
                for line in Path(source).read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        else:
            docs += load_texts(source, n)
        if len(docs) >= n:
            break
    return docs[:n]


def question_prompts(name_or_path: str, samples_per_question: int) -> list[Prompt]:
    """The prompts of a question set, `samples_per_question` answers per question spread over
    its wordings (the first wordings get one more when they do not divide evenly)."""
    prompts = expand(load_question_set(name_or_path))
    wordings: dict[str, int] = {}
    for p in prompts:
        wordings[p.question_id] = wordings.get(p.question_id, 0) + 1
    out = []
    for p in prompts:
        share, extra = divmod(samples_per_question, wordings[p.question_id])
        samples = share + (p.paraphrase < extra)
        if samples:
            out.append(p.model_copy(update={"samples": samples}))
    return out
