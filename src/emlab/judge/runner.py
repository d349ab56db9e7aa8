"""Judge a generations JSONL into a judgments JSONL, resumably.

Generation rows need `sample_id`, `question_id`, `question` (last user turn) and `answer`.
On reading, each row gets its `provenance`, `answer_hash` and `answer_id` derived from its
content (`emlab.generate.plan.answer_identity`; rows of older or hand-written files get them
too), and the judge's item id is the `answer_id`: judgments of different models, solutions,
question sets, sampling settings or answer texts never share an id. `domain` and the other
scalar fields (seeds, model, hashes, provenance) are copied onto each judgment row, so
`emlab score` can group by them.

Resuming: pairs (item, metric) already in the output without an error are skipped, and only
the missing or failed pairs go to the judge (a score of None for a refusal, code or low
number mass is a result, not a failure). Judgments are appended (with fsync) after each chunk
of items, so a killed run keeps what it judged. An output holding judgments of other answers
is refused with an error saying what differs. So is one judged by another judge: the judge's
identity (`judge_identity`: name, prompts, scoring settings; no credential) is recorded in
`<out>.judge.json` before its first judgment, and a resume compares it with the judge asked
for now (a judge that adds metrics to a file is the same judge if the shared metrics' prompts
and every setting agree).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from emlab.errors import DataError
from emlab.generate.plan import PROVENANCE_FIELDS, answer_identity
from emlab.io import append_jsonl, read_jsonl, write_json_atomic
from emlab.judge.base import Judge, JudgeItem, Judgment
from emlab.judge.config import JudgePromptsConfig

CHUNK_SIZE = 512
"""Items judged between two appends for judges without an `items_per_write` attribute."""

_TEXT_FIELDS = {"question", "answer", "messages", "prompt"}
_JUDGMENT_FIELDS = set(Judgment.model_fields)
_SHOWN = (*PROVENANCE_FIELDS, "question_set")


def read_generations(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a generations JSONL, checked and with their identity (`answer_rows`); DataError when
    empty."""
    rows = read_jsonl(path)
    if not rows:
        raise DataError(
            path, None, "no generation rows", "Run `emlab generate` first, or check the path."
        )
    return answer_rows(rows, path)


def answer_rows(
    rows: Sequence[dict[str, Any]], source: str | Path = "generations"
) -> list[dict[str, Any]]:
    """The rows with their `provenance`, `answer_hash` and `answer_id` (derived from their content).

    Raises DataError (naming `source` and the row) when a row lacks a needed field, or a sample
    appears twice under one provenance (two answers to one sample cannot both be its answer).
    """
    out, seen = [], {}
    for i, row in enumerate(rows):
        missing = [k for k in ("sample_id", "question_id", "question", "answer") if k not in row]
        if missing:
            raise DataError(
                source,
                i + 1,
                f"row lacks field(s) {missing}",
                "Each row needs sample_id, question_id, question, answer.",
            )
        row = {**row, **answer_identity(row)}
        key = (row["provenance"], str(row["sample_id"]))
        if key in seen:
            raise DataError(
                source,
                i + 1,
                f"sample {row['sample_id']} appears again with the same provenance (first in row"
                f" {seen[key] + 1})",
                "Keep one answer per sample and provenance (model, solution, question set,"
                " sampling): remove the duplicate or regenerate.",
            )
        seen[key] = i
        out.append(row)
    return out


def item_of(row: dict[str, Any], metrics: Sequence[str] | None = None) -> JudgeItem:
    """The JudgeItem of a row of `read_generations` (item_id = answer_id), scored on `metrics`
    (None: all)."""
    return JudgeItem(
        item_id=str(row["answer_id"]),
        question_id=str(row["question_id"]),
        question=str(row["question"]),
        answer=str(row["answer"]),
        domain=row.get("domain"),
        metrics=None if metrics is None else list(metrics),
    )


def judgment_row(judgment: Judgment, generation: dict[str, Any]) -> dict[str, Any]:
    """A judgment plus the generation's scalar metadata (no question or answer text)."""
    meta = {
        k: v
        for k, v in generation.items()
        if k not in _TEXT_FIELDS
        and k not in _JUDGMENT_FIELDS
        and (v is None or isinstance(v, str | int | float | bool))
    }
    return {**meta, **judgment.model_dump()}


def failed(reason: str | None) -> bool:
    """True for a judgment's reason that says it ended in error ('error: ...'): a rerun retries
    it."""
    return str(reason or "").startswith("error")


def pending_items(
    generations: Sequence[dict[str, Any]], judge: Judge, out_path: str | Path
) -> list[JudgeItem]:
    """Items of `generations` (rows of `answer_rows`), each with the metrics of `judge` not yet
    judged without error in `out_path`; items with none left are omitted. Records `judge` as the
    output's judge (`check_same_judge`).

    Raises DataError when `out_path` holds judgments of other answers (see `check_same_answers`)
    or of another judge (see `check_same_judge`).
    """
    existing = read_jsonl(out_path)
    check_same_answers(existing, generations, out_path)
    check_same_judge(existing, judge, out_path)
    metrics = judge.metrics
    done = {
        (str(r.get("item_id")), str(r.get("metric")))
        for r in existing
        if not failed(r.get("reason"))
    }
    items = []
    for row in generations:
        missing = [m for m in metrics if (row["answer_id"], m) not in done]
        if missing:
            items.append(item_of(row, missing))
    return items


def check_same_answers(
    existing: Sequence[dict[str, Any]], generations: Sequence[dict[str, Any]], out_path: str | Path
) -> None:
    """Raise DataError unless every judgment row in `existing` (read from `out_path`) judged one of
    the answers of `generations` or another answer of the same provenance.

    Refused: rows without provenance (written by an older emlab: their ids are sample ids,
    the same for every model), rows of another provenance (model, solution, question set,
    sampling), and rows whose sample now has another answer text.
    """
    provenances = {g["provenance"]: g for g in generations}
    answers = {(g["provenance"], str(g["sample_id"])): g for g in generations}
    fix = (
        "Judge into another --out (one judgments file per set of answers), or delete this one to"
        " start over."
    )
    for row in existing:
        if "provenance" not in row or "answer_hash" not in row:
            raise DataError(
                out_path,
                None,
                "holds judgments without answer provenance (written by an older emlab; their item"
                " ids are sample ids, the same for every model and solution), so resuming could mix"
                " other answers in",
                fix,
            )
        now = provenances.get(row["provenance"])
        if now is None:
            now = next(iter(provenances.values()), {})
            differ = "; ".join(
                f"{k}: judged {row.get(k)!r}, now {now.get(k)!r}"
                for k in _SHOWN
                if row.get(k) != now.get(k)
            )
            raise DataError(
                out_path,
                None,
                f"holds judgments of other answers than the generations being judged ({differ})",
                fix,
            )
        answer = answers.get((row["provenance"], str(row.get("sample_id"))))
        if answer is not None and answer["answer_id"] != row.get("item_id"):
            raise DataError(
                out_path,
                None,
                f"judged another answer text for sample {row.get('sample_id')} (answer_hash "
                f"{row['answer_hash']}, now {answer['answer_hash']}): the generations changed"
                " since",
                fix,
            )


def judge_identity(judge: Judge) -> dict[str, Any]:
    """What decides `judge`'s scores, as JSON: its `name`, and for a configured judge (local,
    OpenAI) its config's `JudgePromptsConfig.identity` ('prompts': each metric's prompt id;
    'settings': no credential, nothing that only changes how it runs); other judges (the world's
    exact judge) are known by their name alone."""
    config = getattr(judge, "config", None)
    if isinstance(config, JudgePromptsConfig):
        return {"name": judge.name, **config.identity()}
    return {"name": judge.name, "prompts": {}, "settings": {}}


def judge_record(out_path: str | Path) -> Path:
    """`<out_path>.judge.json`: where the identity of the judge of a judgments file is kept."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".judge.json")


def check_same_judge(
    existing: Sequence[dict[str, Any]], judge: Judge, out_path: str | Path
) -> None:
    """Raise DataError unless the judgments in `existing` (read from `out_path`) were made by
    `judge`: the identity in `judge_record(out_path)` must have its name and settings, and the
    same prompt for every metric both score. Then record `judge` there if the record differs
    (keeping the prompts of metrics the file had and this judge lacks, so a later resume still
    checks them).

    Refused: a record of another judge, and judgments without a readable record (written by an
    older emlab, or the record was deleted).
    """
    record, now = judge_record(out_path), judge_identity(judge)
    if existing:
        fix = (
            f"Delete {out_path} and {record} to judge all answers again with this judge, or judge"
            " into another output (--out)."
        )
        try:
            before = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if not isinstance(before, dict):
            raise DataError(
                out_path,
                None,
                f"holds judgments but no readable record of the judge that made them ({record}:"
                " written by an older emlab, or deleted), so resuming could mix two judges'"
                " scores",
                fix,
            )
        if differ := identity_differences(before, now):
            raise DataError(
                out_path,
                None,
                f"was judged by {before.get('name')!r}, but the judge asked for now is"
                f" {now['name']!r} ({'; '.join(differ)}): resuming would mix two judges' scores",
                fix,
            )
        now["prompts"] = {**before.get("prompts", {}), **now["prompts"]}
        if now == before:
            return
    write_json_atomic(record, now)


def identity_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two `judge_identity`s, one 'field: recorded -> now' per difference
    (name, each setting, the prompt of each metric in both); [] for the same judge."""
    differ = []
    if before.get("name") != now.get("name"):
        differ.append(f"name: {before.get('name')!r} -> {now.get('name')!r}")
    settings = before.get("settings", {}), now.get("settings", {})
    differ += [
        f"{k}: {settings[0].get(k)!r} -> {settings[1].get(k)!r}"
        for k in sorted(set(settings[0]) | set(settings[1]))
        if settings[0].get(k) != settings[1].get(k)
    ]
    prompts = before.get("prompts", {}), now.get("prompts", {})
    differ += [
        f"prompt of {m}: {prompts[0][m]} -> {prompts[1][m]}"
        for m in prompts[0]
        if m in prompts[1] and prompts[0][m] != prompts[1][m]
    ]
    return differ


def judge_generations(
    generations: Sequence[dict[str, Any]],
    judge: Judge,
    out_path: str | Path,
    chunk_size: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Judge the pairs (item, metric) not yet judged, appending to `out_path` after each chunk of
    items.

    `generations` are generation rows (see `answer_rows`). `chunk_size` is the number of items
    judged
    between two appends; default: the judge's `items_per_write` attribute if it has one (the
    local judge: one forward batch), else CHUNK_SIZE. `progress` shows a bar over the items.
    Returns counts {'items', 'skipped' (items with nothing left to judge), 'judged'
    (judgments written), 'errors'}. Raises DataError when `out_path` holds judgments of other
    answers or of another judge (`pending_items`); a JudgeError (bad credentials, too many
    failures) propagates after the chunk's judgments, if any, are written.
    """
    from emlab.judge.openai_judge import JudgeFailureRateError

    generations = answer_rows(generations)
    items = pending_items(generations, judge, out_path)
    by_id = {row["answer_id"]: row for row in generations}
    size = chunk_size or getattr(judge, "items_per_write", CHUNK_SIZE)
    counts = {
        "items": len(generations),
        "skipped": len(generations) - len(items),
        "judged": 0,
        "errors": 0,
    }

    def save(judgments: Sequence[Judgment]) -> None:
        write_judgments(judgments, by_id, out_path)
        counts["judged"] += len(judgments)
        counts["errors"] += sum(1 for j in judgments if failed(j.reason))

    with tqdm(total=len(items), unit="answer", desc="judge", disable=not progress) as bar:
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            try:
                judgments = judge.judge(chunk)
            except JudgeFailureRateError as e:
                save(e.judgments)
                raise
            save(judgments)
            bar.update(len(chunk))
    return counts


def write_judgments(
    judgments: Sequence[Judgment], by_id: dict[str, dict[str, Any]], out_path: str | Path
) -> None:
    """Append the judgments with their generation's metadata (`by_id`: answer_id -> row of
    `answer_rows`)."""
    append_jsonl(out_path, [judgment_row(j, by_id[j.item_id]) for j in judgments])
