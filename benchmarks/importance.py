"""Pre-training importance vs stability on SmolLM2, on the same token batches, side by side.

    python benchmarks/importance.py [--chunks 4] [--steps 2]   # JSON
    python benchmarks/importance.py --markdown                   # RESULTS.md section

A solution pair is trained first (two short LoRA runs of emlab's trainer, r16 on all projections,
different data seeds). Both analyses then evaluate the same batch of pre-training text (pydoc
chunks of 128 tokens): importance with `KLEvaluator` (KL(base || tuned) over every real token),
stability with `LossEvaluator`'s loss over the same tokens (every real token a label). Importance
runs its defaults (6 norms, 3 random directions: 25 distinct solutions plus the base); stability
runs 2 eps x 2 seeds (its defaults, 8 eps x 5 seeds, evaluate 41 solutions per solution: the
per-evaluation time is what differs). The analyses alternate `--reps` times; each counts its best.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kl_step  # noqa: E402  (a sibling script: the training data and LoRA of the KL benchmark)

TARGET = 2.0
STABILITY_EPS = (0.1, 0.5)
STABILITY_SEEDS = (0, 1)


def solution_pair(model, tokenizer, steps: int) -> dict:
    """Two LoRA solutions of SmolLM2 from `steps` steps of emlab's trainer each (batch 4)."""
    from emlab.config import validate_config
    from emlab.train.config import TrainConfig
    from emlab.train.loop import train

    pair = {}
    for name, seed in (("general", 0), ("narrow", 1)):
        cfg = validate_config(
            {
                "name": name, "output_dir": tempfile.mkdtemp(), "solution": kl_step._solution("lora"),
                "optim": {"lr": 1e-3, "warmup_steps": 0}, "max_steps": steps, "batch_size": 4, "progress": False,
            },
            TrainConfig,
        )
        pair[name] = train(cfg, model, tokenizer, kl_step.conversations(16, seed, 30)).solution
    return pair


def evaluators(model, tokenizer, chunks: int):
    """(KLEvaluator, a LossEvaluator) on the same batch of `chunks` pydoc chunks of 128 tokens."""
    from emlab.analysis.evaluator import BatchedEvaluator
    from emlab.analysis.importance import KLEvaluator
    from emlab.analysis.loss import LossEvaluator
    from emlab.analysis.text import load_texts, text_batches
    from emlab.models.chat import IGNORE

    class TextLoss(LossEvaluator):
        """LossEvaluator's loss with every real token of text batches as a label."""

        def __init__(self, batches: list[dict]) -> None:
            labelled = [dict(b, labels=b["input_ids"].masked_fill(b["attention_mask"] == 0, IGNORE)) for b in batches]
            BatchedEvaluator.__init__(self, model, labelled)

    batches = text_batches(tokenizer, load_texts("pydoc", n_docs=100), 128, chunks, chunks)
    return KLEvaluator(model, batches), TextLoss(batches)


def measure(chunks: int = 4, steps: int = 2, reps: int = 2, threads: int = 1) -> dict:
    """Seconds of each analysis (best of `reps`, alternating), its forward passes of the model
    (one per evaluated solution and, for importance, the base pass of each batch) and seconds per pass."""
    import torch

    from emlab.analysis.importance import pretraining_importance
    from emlab.analysis.stability import compare_stability

    torch.set_num_threads(threads)
    model, tokenizer = kl_step._model("smollm2")
    start = time.perf_counter()
    pair = solution_pair(model, tokenizer, steps)
    train_seconds = time.perf_counter() - start
    passes = {"importance": 0, "stability": 0}
    times: dict[str, list[float]] = {"importance": [], "stability": []}
    for _ in range(reps):
        for name in times:
            kl, loss = evaluators(model, tokenizer, chunks)  # fresh: nothing cached from an earlier run
            counted = [0]
            hook = model.register_forward_hook(lambda *_, c=counted: c.append(c.pop() + 1))
            t = time.perf_counter()
            if name == "importance":
                pretraining_importance(kl, pair)
            else:
                compare_stability(loss, pair, STABILITY_EPS, STABILITY_SEEDS)
            times[name].append(time.perf_counter() - t)
            hook.remove()
            passes[name] = counted[0]
    per = {name: min(times[name]) / passes[name] for name in times}
    return {
        "chunks": chunks, "tokens": int(kl.batches[0]["attention_mask"].sum()), "train_seconds": train_seconds,
        "seconds": times, "forward_passes": passes, "seconds_per_pass": per, "ratio_per_pass": per["importance"] / per["stability"],
    }


def markdown() -> str:
    """The RESULTS.md section."""
    r = measure()
    per, n = r["seconds_per_solution"], r["solutions_evaluated"]
    met = "met" if r["ratio_per_solution"] <= TARGET else "**missed**"
    return "\n".join([
        "## Real-model analyses: importance vs stability",
        "",
        f"SmolLM2-135M-Instruct (float32, CPU, torch threads 1), a LoRA pair (r16, all projections) from two {2}-step",
        f"emlab trainings; both analyses on the same batch of {r['chunks']} pydoc chunks ({r['tokens']} real tokens).",
        "Importance: `pretraining_importance` with its defaults (6 norms, 3 random directions). Stability:",
        "`compare_stability` with 2 eps x 2 seeds, its loss over the same tokens. Baseline: stability's time per",
        "evaluated solution (a forward pass under the solution plus its metric); best of 2 alternating runs.",
        "Rerun: `python benchmarks/run.py importance`.",
        "",
        "| analysis | solutions evaluated | seconds | per solution | ratio (target <= 2x) |",
        "|---|---|---|---|---|",
        f"| stability (baseline) | {n['stability']} | {min(r['seconds']['stability']):.1f} | {per['stability']:.2f} s | 1.00x |",
        f"| importance | {n['importance']} | {min(r['seconds']['importance']):.1f} | {per['importance']:.2f} s "
        f"| **{r['ratio_per_solution']:.2f}x** ({met}) |",
        "",
        FINDINGS,
    ])


FINDINGS = "Where the time goes: see below."


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
    else:
        print(json.dumps(measure(args.chunks, args.steps, args.reps), indent=2))
