"""The world study's wall time (`make run`) from a cold start, where it goes, and the top
operators of its largest cost (a pre-training step).

    python benchmarks/study.py             # JSON
    python benchmarks/study.py --markdown  # RESULTS.md section
    python benchmarks/study.py --keep DIR  # run into DIR (kept) instead of a temporary folder

Runs `emlab reproduce` (default study, 2 worker processes) into a fresh temporary folder, so
nothing is reused, then reads the run's manifest timings and every stage's own time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

TARGET_SECONDS = 300


def run_study(keep: str | None = None) -> dict:
    """Wall time of a cold `emlab reproduce`, its cumulative stage marks and stage time by kind.
    The run goes to a temporary folder, or to `keep` (which must not hold an earlier run)."""
    with tempfile.TemporaryDirectory() if keep is None else nullcontext(keep) as tmp:
        if list(Path(tmp).glob("*")):
            raise SystemExit(f"{tmp} is not empty: a cold run needs an empty folder")
        start = time.time()
        subprocess.run([sys.executable, "-m", "emlab", "reproduce", "--set", f"output_dir={tmp}"],
                       check=True, capture_output=True, text=True)
        wall = time.time() - start
        run = next(p for p in Path(tmp).iterdir() if (p / "manifest.json").exists())
        by_kind: dict[str, float] = defaultdict(float)
        for result in [*Path(tmp).glob("chat_models/*/result.json"), *run.glob("stages/*/result.json")]:
            kind = re.sub(r"_(world|control|seed\d+).*|-[0-9a-f]+$", "", result.parent.name)
            by_kind[kind] += json.loads(result.read_text()).get("stage_seconds", 0.0)
    return {"wall_seconds": wall, "stage_seconds_by_kind": dict(by_kind)}


def pretraining_step_profile(steps: int = 5) -> tuple[float, list[tuple[str, float]]]:
    """Seconds per pre-training step of the default world model (a batch of the default size,
    1 thread; the machine's speed at the time of the run) and the share of CPU time of its
    top operators."""
    import torch
    from torch.profiler import profile

    from emlab.models.chat import collate
    from emlab.study.config import StudyConfig
    from emlab.study.world_models import initial_model
    from emlab.train.loop import encode_all
    from emlab.world import build_world, pretraining_documents, world_tokenizer

    torch.set_num_threads(1)
    study = StudyConfig()
    world = build_world(study.world)
    tokenizer = world_tokenizer(world)
    docs = encode_all(tokenizer, [d.messages for d in pretraining_documents(world, n=study.pretrain.batch_size)], study.model.max_positions, "all")
    batch = collate(docs, tokenizer.pad_token_id)
    model = initial_model(study, tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    with profile() as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return seconds, [(e.key, e.self_cpu_time_total / total) for e in events[:5]]


def markdown(keep: str | None = None) -> str:
    """The RESULTS.md section."""
    r = run_study(keep)
    step_seconds, ops = pretraining_step_profile()
    kinds = sorted(r["stage_seconds_by_kind"].items(), key=lambda kv: -kv[1])
    work = sum(r["stage_seconds_by_kind"].values())
    met = "met" if r["wall_seconds"] <= TARGET_SECONDS else "**missed**"
    return "\n".join([
        "## The world study (`make run`)",
        "",
        "A cold `emlab reproduce` of the default study (2 worker processes, 1 torch thread each; nothing cached; "
        "each stage starts as soon as the stages it needs are done).",
        f"Baseline: the target of {TARGET_SECONDS} s on 2 cores. Rerun: `python benchmarks/run.py study`.",
        "",
        f"Wall time **{r['wall_seconds']:.0f} s** (target <= {TARGET_SECONDS} s: {met}). Stage time summed over the "
        f"workers: {work:.0f} s, so an even split over 2 workers would take {work / 2:.0f} s; the rest is start-up, "
        f"the report and the last stage's wait. Machine speed at the time: a pre-training step took "
        f"{1000 * step_seconds:.0f} ms (this shared machine's speed drifts by up to ~1.4x within an hour).",
        "",
        "| stage kind | stage seconds (sum over workers) |",
        "|---|---|",
        *(f"| {k} | {v:.0f} |" for k, v in kinds),
        "",
        "Top operators of a pre-training step (the largest cost; torch.profiler, self CPU time):",
        "",
        "| operator | share |",
        "|---|---|",
        *(f"| `{name[:60]}` | {100 * share:.0f}% |" for name, share in ops),
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--keep", help="run into this (empty or new) folder and keep it")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(args.keep))
    else:
        step_seconds, ops = pretraining_step_profile()
        print(json.dumps({**run_study(args.keep), "pretraining_step_seconds": step_seconds, "profile": ops}, indent=2))
