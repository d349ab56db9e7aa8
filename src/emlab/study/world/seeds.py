"""The world study on several world seeds (new grammar, corpus and chat model each), side by side.

    emlab reproduce configs/world/world_seeds.yaml   # world_seeds: [0, 1, 2]

Each world seed runs the whole study (its own run folder, stages cached as usual); then
`report.md` and `results.json` in `<output_dir>/<name>-world-seeds/` hold every target of each
world seed in one table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from emlab.io import write_json_atomic, write_text_atomic
from emlab.study.world.config import StudyConfig
from emlab.study.world.targets import format_bound, format_value


def per_world_seed(study: StudyConfig) -> list[StudyConfig]:
    """One study per entry of `study.world_seeds`: the same config with that world seed."""
    return [
        study.model_copy(
            update={
                "world": study.world.model_copy(update={"seed": s}),
                "world_seeds": [],
                "name": f"{study.name}-w{s}",
            }
        )
        for s in study.world_seeds
    ]


def reproduce_world_seeds(study: StudyConfig, run: Callable[[StudyConfig], Path]) -> Path:
    """Run `run` (the single-world study) for each world seed; write the side-by-side report
    into `<output_dir>/<name>-world-seeds/` and return that folder."""
    runs = {s.world.seed: run(s) for s in per_world_seed(study)}
    results = {seed: json.loads((path / "results.json").read_text()) for seed, path in runs.items()}
    out = Path(study.output_dir) / f"{study.name}-world-seeds"
    table = side_by_side(results)
    write_json_atomic(
        out / "results.json",
        {"runs": {str(k): str(v) for k, v in runs.items()}, "table": table},
    )
    write_text_atomic(out / "report.md", side_by_side_markdown(table, runs))
    return out


def side_by_side(results: dict[int, dict]) -> list[dict]:
    """Rows {'name', 'op', 'kind', 'limits': {world seed: limit}, 'values': {world seed:
    measured}, 'met': {world seed: bool}} of every target of any world seed's results.json, in
    first-seen order (a limit can differ by seed: the efficiency targets' is the narrow
    solution's own value)."""
    rows: dict[str, dict] = {}
    for seed, r in results.items():
        for t in r["targets"]:
            row = rows.setdefault(
                t["name"],
                {
                    "name": t["name"],
                    "op": t["op"],
                    "kind": t["kind"],
                    "limits": {},
                    "values": {},
                    "met": {},
                },
            )
            row["limits"][seed], row["values"][seed] = t["limit"], t["measured"]
            row["met"][seed] = t["met"]
    return list(rows.values())


def side_by_side_markdown(table: list[dict], runs: dict[int, Path]) -> str:
    """The side-by-side Markdown: one column per world seed (measured value, '**' where missed;
    the bound in the cell where it differs by seed)."""
    seeds = list(runs)
    lines = [
        "# The world study on several world seeds",
        "",
        (
            "Each column is a whole study on a new world (grammar, corpus and chat model drawn with"
            " that seed); rates in percent, norms and losses as numbers, ** marks a missed target."
        ),
        "",
        "| target | bound | " + " | ".join(f"world seed {s}" for s in seeds) + " |",
        "|---|---|" + "---|" * len(seeds),
    ]
    for row in table:
        cells = " | ".join(_cell(row, s) for s in seeds)
        lines.append(f"| {row['name']} | {_bound(row)} | {cells} |")
    lines += ["", "Runs: " + ", ".join(f"world seed {s}: `{p}`" for s, p in runs.items())]
    return "\n".join(lines) + "\n"


def _per_seed_limits(row: dict) -> bool:
    return len(set(row["limits"].values())) > 1


def _bound(row: dict) -> str:
    """A side-by-side row's bound: '>= 30%', or 'op (per seed)' where the limit differs by seed."""
    if _per_seed_limits(row):
        return f"{row['op']} (per seed)"
    return format_bound(row["op"], next(iter(row["limits"].values())), row["kind"])


def _cell(row: dict, seed: int) -> str:
    """One world seed's cell: its measured value ('**' where missed, '-' where not measured),
    followed by its bound in brackets where the limit differs by seed."""
    if seed not in row["values"]:
        return "-"
    value = format_value(row["values"][seed], row["kind"])
    value = value if row["met"][seed] else f"**{value}**"
    if _per_seed_limits(row):
        return f"{value} ({format_bound(row['op'], row['limits'][seed], row['kind'])})"
    return value
