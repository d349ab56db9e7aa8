"""Judge a generations JSONL into a judgments JSONL, resumably.

Generation rows need `sample_id`, `question_id`, `question` (last user turn) and `answer`;
`domain` and other scalar fields (seeds, model, hashes) are copied onto each judgment row,
so `emlab score` can group by them. Pairs (item, metric) already in the output without an
error are skipped; error rows are retried on the next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emlab.errors import DataError
from emlab.io import append_jsonl, read_jsonl
from emlab.judge.base import Judge, JudgeItem, Judgment

_TEXT_FIELDS = {"question", "answer", "messages", "prompt"}
_JUDGMENT_FIELDS = set(Judgment.model_fields)


def read_generations(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a generations JSONL, checked for the fields judging needs."""
    rows = read_jsonl(path)
    if not rows:
        raise DataError(path, None, "no generation rows", "Run `emlab generate` first, or check the path.")
    for i, row in enumerate(rows):
        missing = [k for k in ("sample_id", "question_id", "question", "answer") if k not in row]
        if missing:
            raise DataError(path, i + 1, f"row lacks field(s) {missing}", "Each row needs sample_id, question_id, question, answer.")
    return rows


def item_of(row: dict[str, Any]) -> JudgeItem:
    """The JudgeItem of a generation row (item_id = sample_id)."""
    return JudgeItem(
        item_id=str(row["sample_id"]),
        question_id=str(row["question_id"]),
        question=str(row["question"]),
        answer=str(row["answer"]),
        domain=row.get("domain"),
    )


def judgment_row(judgment: Judgment, generation: dict[str, Any]) -> dict[str, Any]:
    """A judgment plus the generation's scalar metadata (no question or answer text)."""
    meta = {
        k: v
        for k, v in generation.items()
        if k not in _TEXT_FIELDS and k not in _JUDGMENT_FIELDS and (v is None or isinstance(v, str | int | float | bool))
    }
    return {**meta, **judgment.model_dump()}


def done_pairs(out_path: str | Path) -> set[tuple[str, str]]:
    """(item_id, metric) pairs already judged without error in `out_path`."""
    return {
        (str(r["item_id"]), str(r["metric"]))
        for r in read_jsonl(out_path)
        if "item_id" in r and "metric" in r and not str(r.get("reason") or "").startswith("error")
    }


def judge_generations(
    generations: Sequence[dict[str, Any]], judge: Judge, out_path: str | Path, chunk_size: int = 512
) -> dict[str, int]:
    """Judge the rows not yet judged, appending to `out_path` after each chunk of items.

    Returns counts {'items', 'skipped', 'judged', 'errors'}. A JudgeError (bad credentials,
    too many failures) propagates after the chunk's judgments, if any, are written.
    """
    from emlab.judge.openai_judge import JudgeFailureRateError

    done = done_pairs(out_path)
    pending = [row for row in generations if any((str(row["sample_id"]), m) not in done for m in judge.metrics)]
    by_id = {str(row["sample_id"]): row for row in pending}
    counts = {"items": len(generations), "skipped": len(generations) - len(pending), "judged": 0, "errors": 0}
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start : start + chunk_size]
        try:
            judgments = judge.judge([item_of(row) for row in chunk])
        except JudgeFailureRateError as e:
            _write(e.judgments, by_id, done, out_path, counts)
            raise
        _write(judgments, by_id, done, out_path, counts)
    return counts


def _write(
    judgments: Sequence[Judgment], by_id: dict[str, dict[str, Any]], done: set[tuple[str, str]], out_path: str | Path, counts: dict[str, int]
) -> None:
    fresh = [j for j in judgments if (j.item_id, j.metric) not in done]
    append_jsonl(out_path, [judgment_row(j, by_id[j.item_id]) for j in fresh])
    counts["judged"] += len(fresh)
    counts["errors"] += sum(1 for j in fresh if (j.reason or "").startswith("error"))
