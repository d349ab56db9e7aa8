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
    """Rows {'name', 'op', 'limit', 'values': {world seed: measured}, 'met': {world seed: bool}} of
    every target of any world seed's results.json, in first-seen order."""
    rows: dict[str, dict] = {}
    for seed, r in results.items():
        for t in r["targets"]:
            row = rows.setdefault(
                t["name"],
                {"name": t["name"], "op": t["op"], "limit": t["limit"], "values": {}, "met": {}},
            )
            row["values"][seed], row["met"][seed] = t["measured"], t["met"]
    return list(rows.values())


def side_by_side_markdown(table: list[dict], runs: dict[int, Path]) -> str:
    """The side-by-side Markdown: one column per world seed (measured %, '**' where missed)."""
    seeds = list(runs)
    lines = [
        "# The world study on several world seeds",
        "",
        (
            "Each column is a whole study on a new world (grammar, corpus and chat model drawn with"
            " that seed); rates in percent, ** marks a missed target."
        ),
        "",
        "| target | bound | " + " | ".join(f"world seed {s}" for s in seeds) + " |",
        "|---|---|" + "---|" * len(seeds),
    ]
    for row in table:
        cells = [
            (
                (
                    f"{100 * row['values'][s]:.1f}%"
                    if row["met"][s]
                    else f"**{100 * row['values'][s]:.1f}%**"
                )
                if s in row["values"]
                else "-"
            )
            for s in seeds
        ]
        lines.append(
            f"| {row['name']} | {row['op']} {100 * row['limit']:g}% | " + " | ".join(cells) + " |"
        )
    lines += ["", "Runs: " + ", ".join(f"world seed {s}: `{p}`" for s, p in runs.items())]
    return "\n".join(lines) + "\n"
