"""KL-regularised LoRA step vs plain SFT step: time and peak memory, side by side.

    python benchmarks/kl_step.py [--model tiny|smollm2] [--steps 6]   # JSON for one model
    python benchmarks/kl_step.py --markdown                             # RESULTS.md section

Each variant runs in its own process (peak RSS is per process); the ratio is what counts.
The FLOP floor of SFT+KL (OOD batch as large as the SFT batch) is about 2.33x SFT.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile

WORDS = "the cat sat on a mat and the dog ran to the park with a ball under blue sky".split()


def conversations(n: int, seed: int, words: int) -> list[list[dict[str, str]]]:
    import random

    rng = random.Random(seed)
    return [
        [{"role": "user", "content": " ".join(rng.choices(WORDS, k=words))},
         {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=words))}]
        for _ in range(n)
    ]


def worker(model_name: str, kl: bool, steps: int) -> dict:
    """Train `steps` LoRA steps (batch 8, ~128 tokens) and time the steps after the first."""
    import torch

    from emlab.config import validate_config
    from emlab.train.config import TrainConfig
    from emlab.train.loop import train

    torch.set_num_threads(2)
    if model_name == "tiny":
        from emlab.models.tiny import tiny_qwen2, train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer([" ".join(WORDS)] * 20, vocab_size=300)
        model = tiny_qwen2(len(tokenizer), hidden_size=64, num_layers=3, num_heads=4)
    else:
        from emlab.models.config import ModelConfig
        from emlab.models.load import load_model

        model, tokenizer = load_model(ModelConfig(name_or_path=model_name))
    cfg = validate_config(
        {
            "output_dir": tempfile.mkdtemp(),
            "solution": {"kind": "lora", "r": 16, "alpha": 16,
                         "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
            "kl": {"weight": 1.0 if kl else 0.0, "scope": "all"},
            "max_steps": steps, "batch_size": 8, "progress": False,
        },
        TrainConfig,
    )
    result = train(cfg, model, tokenizer, conversations(64, 0, 50), conversations(64, 1, 50) if kl else None)
    seconds = [r["seconds"] for r in result.metrics]
    per_step = (seconds[-1] - seconds[0]) / (len(seconds) - 1)
    return {"step_seconds": per_step, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(model: str, steps: int) -> dict:
    """Both variants in fresh processes; returns their numbers and the ratios."""
    out = {}
    for kl in (False, True):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", "--model", model, "--steps", str(steps)] + (["--kl"] if kl else []),
            capture_output=True, text=True, check=True,
        )
        out["sft_kl" if kl else "sft"] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["time_ratio"] = out["sft_kl"]["step_seconds"] / out["sft"]["step_seconds"]
    out["memory_ratio"] = out["sft_kl"]["peak_rss_mib"] / out["sft"]["peak_rss_mib"]
    return out


def markdown() -> str:
    """The RESULTS.md section: both models, 12 tiny steps and 4 SmolLM2 steps."""
    rows = []
    for model, steps in (("tiny", 12), ("smollm2", 4)):
        r = measure(model, steps)
        rows.append(
            f"| {model} | {r['sft']['step_seconds']:.3f} s / {r['sft_kl']['step_seconds']:.3f} s | **{r['time_ratio']:.2f}x** (target <= 2.5x) | "
            f"{r['sft']['peak_rss_mib']:.0f} / {r['sft_kl']['peak_rss_mib']:.0f} MiB | **{r['memory_ratio']:.2f}x** (target <= 1.15x) |"
        )
    return "\n".join([
        "## KL-regularised step vs plain SFT step",
        "",
        "LoRA r16 on all projections, batch 8 x ~128 tokens, OOD batch as large as the SFT batch, torch threads 2.",
        "Baseline: the plain SFT step of the same model, batch and LoRA. Memory is the peak resident set size of",
        "a process running only that variant. Rerun: `python benchmarks/run.py kl_step`.",
        "",
        "| model | time (SFT / SFT+KL) | time ratio | peak memory (SFT / SFT+KL) | memory ratio |",
        "|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--kl", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
    elif args.worker:
        print(json.dumps(worker(args.model, args.kl, args.steps)))
    else:
        print(json.dumps(measure(args.model, args.steps), indent=2))
