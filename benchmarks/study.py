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

FINDINGS = """Where the time goes and what was tried (profiles by stage, then inside stages with
cProfile and torch.profiler):
- **Pre-training** (two chat models, one per core, about half the stage time) runs at the machine's
  speed: its matrix products reach 44-68 GFLOP/s on one AVX2 core (MKL), flash attention is the
  fastest CPU attention for head size 16 (math and eager paths 2x slower; head sizes 32/64 only
  10-20% faster), `torch.compile` costs 51 s to compile and is slower per step, flushing denormals
  changes nothing. Fewer tokens is the only lever, and it changes the science: 400 or 500 steps
  leave a less coherent chat model (exact p(valid) OOD 0.90 / 0.95 against 0.96); batches of 24, or
  of 16 with AdamW beta2 0.95, keep it as coherent (0.960 / 0.967), but full fine-tuning's OOD EM
  fell from 41% to 23% in full studies (target 30%). The default stays 600 steps of 32.
- **Fine-tunes and analyses** (the other half) were made cheaper without changing what they compute:
  exact answer-set scoring shares each prompt's key/value cache with its answers (0.6x the time of a
  call), sampling draws each row's token by inverse CDF from uniforms drawn once per row (the
  per-row `multinomial` calls took 0.34 s of a 1.3 s evaluation; now 0.02 s), tokenised answer sets
  are reused within a worker, LoRA hooks add B(Ax) in one `addmm`, and every stage starts as soon as
  its inputs exist (no phase barriers, costliest ready stage first).
- **Start-up and the end**: study workers are forks of the main process on Linux (a spawned worker
  imported torch, transformers and peft again, about 13 s at a slow hour), and the analyses evaluate
  the base model once per evaluator (a solution scaled by 0 is the base; the efficiency and
  importance sweeps asked for it up to 7 times). What is left outside the stages is the CLI's
  imports (about 10 s) and the report (about 4 s).
- **Cheaper pre-training, tried again on other shapes (issue 15, 2026-12-01, one chat model each,
  seed-0 fine-tunes)**: at most 4 turns per document (0.66x the time per step) and 400 steps leave
  the chat model incoherent unless the model is wide: 3 layers d 64 32% incoherent answers (full
  fine-tuning OOD EM 23%), 4 layers d 64 16% (21%), 6 layers d 48 35% (35%); 4 layers d 128 (lr
  6e-3) stays coherent (5%, OOD EM 44%) but its steps cost about 1.6x, so its pre-training costs
  what the default's does. Per-layer overhead dominates at this size (6 layers d 32: 0.9x the
  default's step; 8 layers d 32: 1.4x). None reached 1.8x less pre-training compute without
  weakening the chat model; the world is unchanged.
- **At a slow hour (issue 17: <= 300 s when a pre-training step takes 550 ms): not met, and not
  reachable with this world's pre-training.** The critical path starts with the two chat models,
  one per core, each 600 pre-training steps: at 550 ms a step that is 330 s before any fine-tune,
  above the target by itself (the cold run above: 220 s at 245 ms a step, with the stages after
  pre-training taking the rest). Closing it needs about 1.8x fewer pre-training FLOPs that keep
  the chat model coherent and EM as strong; every cheaper recipe measured so far (fewer steps,
  smaller batches, fewer turns, other depths and widths; bullets above) failed one of the two.
  Candidates not yet tried: a pre-training shared by the world and the control world up to the
  point where their corpora differ, or knowledge distillation from a cached larger chat model.
- Since 2026-12-01 the default study also continues each general solution with KL (issue 15): 12
  more 60-step fine-tunes (the train stages above include them).
- **Release to release, side by side** (cold `emlab reproduce`, 2026-11-29, one run after the other,
  pre-training step 306 ms): previous release (2aaf30e) 284 s, this release 265 s and 280 s;
  2026-12-01 (study split into stages, both continued directions) 220 s at 245 ms a step. The
  previous release measured 444 s during a slow hour (pre-training step 549 ms): the target holds at
  this machine's usual speed and not at its slowest. Below 300 s at every speed needs less
  pre-training compute: a cheaper recipe that keeps EM (validated by the full study, not by
  coherence alone) or a smaller world model, both of which change the world's numbers.
- **The one-word slots world becomes the default (issue 15, 2026-12-01)**: 64 good and 64 bad
  answers per question instead of 4 and 4, so every exact evaluation scores 6144 answer sequences
  instead of 384 and each KL fine-tune tokenises 10,240 OOD conversations instead of 640. Cold,
  one run after the other (pre-training step 198 ms): this release 440 s, the previous release
  (57380a4, the previous world) 344 s; the target is missed. Made cheaper without changing any
  number (identical token ids and probabilities): a `Renderer` renders each prompt shared by a
  batch once (a single-turn conversation: one render instead of three), answer sets are tokenised
  in two batched calls (exact evaluator set-up 3.4 s -> 1.3 s), the world study builds its exact
  evaluator once per worker process (a rank-1 LoRA KL stage 26.8 -> 18.0 s, a steering stage
  11.3 -> 4.6 s, measured on a loaded machine), and the analyses' losses use at most
  `analysis.max_heldout` (64) held-out conversations (this world has 512). Where the rest goes:
  train stages are 511 of the 844 s of stage time; inside a 60-step rank-1 LoRA KL stage, the 4
  exact evaluations through peft's adapters (about 1.75 s each, against 0.6 s without adapters),
  the KL steps (two forward passes each) and tokenising the OOD data (2.4 s). Levers not yet
  built then (all three built since, next bullet): skip the step-0 evaluation of a fresh run (it
  is the chat model's), evaluate LoRA through merged weights, tokenise a world's data once per
  worker.
- **Same numbers, less work (issue 15, 2026-12-01, later)**: cold, one run right after the
  other: the previous release (319968b) 390 s, this release 333 s (stage time 748 -> 630 s;
  train stages 439 -> 327 s; the report's numbers are the same). Each change was checked to give
  the same metrics rows to the last bit unless said: a study worker tokenises the world's
  training data once (`EncodedSet`, handed to `train`; the 10,240 OOD conversations took 3 s per
  KL stage); a fresh run's step 0 is the chat model's numbers (evaluated once per worker) and a
  continued run's the final numbers of the run it continues (the same bits for LoRA and steering;
  full fine-tuning reloaded as base + delta differs by 1e-9 to 1e-11); answer sets are grouped
  and padded once per evaluator (`Continuations`: an exact evaluation 1.5 -> 1.3 s); LoRA runs are
  evaluated through merged float32 weights, put back unchanged after (peft's adapter pass 1.3-1.8
  s against 1.0-1.25 s; p(bad) moves by about 1e-9, results.json by at most 3e-7). What is left:
  about 160 exact evaluations per study at about 1 s each (6144 answer sequences; compute-bound:
  larger scoring batches are not faster and change log-probabilities by 5e-6), two chat models
  of about 100 s each (their data tokenisation about 9 s each), analyses about 80 s. Two more
  cold runs of this release: 294 and 316 s (pre-training step 223 and 209 ms): at the target,
  not under it.
- **Fewer points on the curves over steps (issue 15, 2026-12-01)**: `eval_every` 20 -> 30. An
  evaluation does not change training (checked: the same loss, KL, norm and learning rate at
  every step, the same final numbers), so every number of the report stays; the curves over
  steps get points at 0, 30 and 60 instead of 0, 20, 40 and 60, and the study makes 54 fewer
  exact evaluations (about 1 s each). `configs/world/continued.yaml` keeps 20 for its 300-step
  curves. Tried and not taken: 3 answers of each slot instead of 4 (54 answers per question
  instead of 128, evaluations 2.4x cheaper) weakens the steering vector below its target on
  world seed 0 (in-domain 45.3%, OOD 45.9%, against >= 60%)."""
"""What profiling and experiments found (kept in the section; update it when the picture
changes)."""


def run_study(keep: str | None = None) -> dict:
    """Wall time of a cold `emlab reproduce`, its cumulative stage marks and stage time by kind.
    The run goes to a temporary folder, or to `keep` (which must not hold an earlier run)."""
    with tempfile.TemporaryDirectory() if keep is None else nullcontext(keep) as tmp:
        if list(Path(tmp).glob("*")):
            raise SystemExit(f"{tmp} is not empty: a cold run needs an empty folder")
        start = time.time()
        subprocess.run(
            [sys.executable, "-m", "emlab", "reproduce", "--set", f"output_dir={tmp}"],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.time() - start
        by_kind: dict[str, float] = defaultdict(float)
        for result in Path(tmp).glob("stages/*/result.json"):
            kind = re.sub(r"_(world|control|seed\d+).*|-[0-9a-f]+$", "", result.parent.name)
            by_kind[kind] += json.loads(result.read_text()).get("stage_seconds", 0.0)
    return {"wall_seconds": wall, "stage_seconds_by_kind": dict(by_kind)}


def pretraining_step_profile(steps: int = 5) -> tuple[float, list[tuple[str, float]]]:
    """Seconds per pre-training step of the default world model (a batch of the default size,
    1 thread; the machine's speed at the time of the run) and the share of CPU time of its
    top operators."""
    import torch
    from torch.profiler import profile

    from emlab.models.chat import collate, encode_all, padding_id
    from emlab.study.world.config import StudyConfig
    from emlab.study.world.models import initial_model
    from emlab.world import build_world, pretraining_documents, world_tokenizer

    torch.set_num_threads(1)
    study = StudyConfig()
    world = build_world(study.world)
    tokenizer = world_tokenizer(world)
    docs = encode_all(
        tokenizer,
        [d.messages for d in pretraining_documents(world, n=study.pretrain.batch_size)],
        study.model.max_positions,
        "all",
    )
    batch = collate(docs, padding_id(tokenizer))
    model = initial_model(study, tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
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
    return "\n".join(
        [
            "## The world study (`make run`)",
            "",
            (
                "A cold `emlab reproduce` of the default study (2 worker processes, 1 torch thread"
                " each; nothing cached; each stage starts as soon as the stages it needs are done)."
            ),
            (
                f"Baseline: the target of {TARGET_SECONDS} s on 2 cores. Rerun: `python"
                " benchmarks/run.py study`."
            ),
            "",
            (
                f"Wall time **{r['wall_seconds']:.0f} s** (target <= {TARGET_SECONDS} s: {met})."
                f" Stage time summed over the workers: {work:.0f} s, so an even split over 2"
                f" workers would take {work / 2:.0f} s; the rest is start-up, the report and the"
                " last stage's wait. Machine speed at the time: a pre-training step took"
                f" {1000 * step_seconds:.0f} ms (compare runs by this number: this shared machine's"
                " speed drifts by 1.5x within hours)."
            ),
            "",
            "| stage kind | stage seconds (sum over workers) |",
            "|---|---|",
            *(f"| {k} | {v:.0f} |" for k, v in kinds),
            "",
            (
                "Top operators of a pre-training step (the largest cost; torch.profiler, self CPU"
                " time):"
            ),
            "",
            "| operator | share |",
            "|---|---|",
            *(f"| `{name[:60]}` | {100 * share:.0f}% |" for name, share in ops),
            "",
            FINDINGS,
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--keep", help="run into this (empty or new) folder and keep it")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(args.keep))
    else:
        step_seconds, ops = pretraining_step_profile()
        print(
            json.dumps(
                {**run_study(args.keep), "pretraining_step_seconds": step_seconds, "profile": ops},
                indent=2,
            )
        )
