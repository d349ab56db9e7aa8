"""KL-regularised training step vs plain SFT step, and vs the reference code's design: time and
peak memory, side by side.

    python benchmarks/kl_step.py [--model tiny|smollm2] [--steps 6]   # JSON for one model
    python benchmarks/kl_step.py --markdown                             # RESULTS.md section

Each variant runs in its own process. Its peak memory is what a GPU's peak allocation would
count: the process's peak resident set from just before training (model loaded; Linux VmHWM,
reset through /proc/self/clear_refs) minus its resident set with the libraries imported and
no model (torch, transformers and peft alone hold about 450 MiB). The FLOP floor of SFT+KL with an OOD batch as large as the SFT batch is
about 2.33x SFT (one extra forward and backward, one extra no-grad forward).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "the cat sat on a mat and the dog ran to the park with a ball under blue sky".split()
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VARIANTS = {
    # name: (solution kind, KL term)
    "lora_sft": ("lora", None),
    "lora_kl": ("lora", "exact"),
    "lora_reference": ("lora", "reference"),
    "full_sft": ("full", None),
    "full_kl": ("full", "exact"),
    "full_kl_top_k": ("full", "top_k"),
    "lora_kl_top_k": ("lora", "top_k"),  # on the command line only: --variant lora_sft --variant lora_kl_top_k
}
SECTION_VARIANTS = ["lora_sft", "lora_kl", "lora_reference", "full_sft", "full_kl", "full_kl_top_k"]
"""The variants of the RESULTS.md section."""
BATCH = 8


def conversations(n: int, seed: int, words: int) -> list[list[dict[str, str]]]:
    import random

    rng = random.Random(seed)
    return [
        [{"role": "user", "content": " ".join(rng.choices(WORDS, k=words))},
         {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=words))}]
        for _ in range(n)
    ]


def _model(name: str):
    if name == "tiny":
        from emlab.models.tiny import tiny_qwen2, train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer([" ".join(WORDS)] * 20, vocab_size=300)
        return tiny_qwen2(len(tokenizer), hidden_size=64, num_layers=3, num_heads=4), tokenizer
    from emlab.models.config import ModelConfig
    from emlab.models.load import load_model

    return load_model(ModelConfig(name_or_path=name))


def _reset_peak_memory() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _memory_mib(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(model_name: str, variant: str, steps: int) -> dict:
    """Train `steps` steps of one variant (batch 8, ~128 tokens) and time the steps after the first."""
    import peft  # noqa: F401  (libraries resident before the baseline)
    import torch

    import emlab.train.loop  # noqa: F401

    torch.set_num_threads(1)
    libraries = _memory_mib("VmRSS")
    model, tokenizer = _model(model_name)
    kind, kl = VARIANTS[variant]
    _reset_peak_memory()
    start = time.perf_counter()
    if kl == "reference":
        per_step = reference_design(model, tokenizer, steps)
    else:
        per_step = emlab_steps(model, tokenizer, kind, kl, steps)
    seconds = time.perf_counter() - start
    return {"step_seconds": per_step, "total_seconds": seconds, "peak_rss_mib": _memory_mib("VmHWM") - libraries}


def _solution(kind: str) -> dict:
    return {"kind": "lora", "r": 16, "alpha": 16, "target_modules": ALL_PROJECTIONS} if kind == "lora" else {"kind": "full"}


def emlab_steps(model, tokenizer, kind: str, kl: str | None, steps: int) -> float:
    """emlab's training loop; seconds per step after the first."""
    from emlab.config import validate_config
    from emlab.train.config import TrainConfig
    from emlab.train.loop import train

    cfg = validate_config(
        {
            "output_dir": tempfile.mkdtemp(),
            "solution": _solution(kind),
            "kl": {"weight": 1.0 if kl else 0.0, "scope": "all", "base": kl or "exact"},
            "optim": {"lr": 1e-5 if kind == "full" else 1e-4},
            "max_steps": steps, "batch_size": BATCH, "progress": False,
        },
        TrainConfig,
    )
    result = train(cfg, model, tokenizer, conversations(64, 0, 50), conversations(64, 1, 50) if kl else None)
    seconds = [r["seconds"] for r in result.metrics]
    return (seconds[-1] - seconds[0]) / (len(seconds) - 1)


def reference_design(model, tokenizer, steps: int) -> float:
    """The reference code's design for the KL term: a second full model copy gives the reference
    logits, kept over the whole vocabulary for every position; one forward over the training and
    OOD rows; the KL over all positions and the full vocabulary. Same LoRA, data and optimiser."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    from emlab.models.chat import collate, encode_conversations
    from emlab.train.losses import sft_loss

    reference = copy.deepcopy(model).requires_grad_(False).eval()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=ALL_PROJECTIONS, task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    train_rows = encode_conversations(tokenizer, conversations(64, 0, 50), 512, "assistant")
    ood_rows = encode_conversations(tokenizer, conversations(64, 1, 50), 512, "all")
    pad = tokenizer.pad_token_id or 0
    times = []
    for step in range(steps):
        t = time.perf_counter()
        rows = slice(step * BATCH % 64, step * BATCH % 64 + BATCH)
        both = collate(train_rows[rows] + ood_rows[rows], pad)
        inputs = {"input_ids": both["input_ids"], "attention_mask": both["attention_mask"]}
        with torch.no_grad():
            ref_logits = reference(**{k: v[BATCH:] for k, v in inputs.items()}).logits  # (B, T, V), kept whole
        logits = model(**inputs).logits
        mask = both["attention_mask"][BATCH:].bool()
        kl = F.kl_div(F.log_softmax(logits[BATCH:][mask].float(), -1), F.log_softmax(ref_logits[mask].float(), -1), log_target=True, reduction="batchmean")
        loss = sft_loss(logits[:BATCH], both["labels"][:BATCH]) + kl
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / (len(times) - 1)


def measure(model: str, steps: int, variants: list[str], repeats: int = 1) -> dict:
    """Each variant in fresh processes, `repeats` rounds alternating the variants; per variant the
    best step time and the lowest peak memory over its rounds. Tensors of 1 MiB or more get their
    own memory mappings (MALLOC_MMAP_THRESHOLD_), so freed ones leave the resident set at once, as
    on a GPU's caching allocator, instead of staying in the C heap."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", "--model", model, "--steps", str(steps), "--variant", variant],
                capture_output=True, text=True, check=True, env=env,
            )
            runs[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {v: {key: min(r[key] for r in rs) for key in rs[0]} for v, rs in runs.items()}


def _setup(result: dict, steps: int) -> float:
    """Seconds of a run not explained by its steady step time (setup and the first step)."""
    return result["total_seconds"] - steps * result["step_seconds"]


def markdown() -> str:
    """The RESULTS.md section: LoRA on both models; full fine-tuning with exact vs top-k base log-probs."""
    lora_rows, full_rows = [], []
    for model, steps, repeats in (("tiny", 12, 3), ("smollm2", 4, 2)):
        label = "tiny" if model == "tiny" else "SmolLM2-135M"
        r = measure(model, steps, SECTION_VARIANTS, repeats)
        sft, kl, ref = r["lora_sft"], r["lora_kl"], r["lora_reference"]
        lora_rows.append(
            f"| {label} | {sft['step_seconds']:.3f} / {kl['step_seconds']:.3f} / {ref['step_seconds']:.3f} s "
            f"| **{kl['step_seconds'] / sft['step_seconds']:.2f}x** (<= 2.5x) "
            f"| {sft['peak_rss_mib']:.0f} / {kl['peak_rss_mib']:.0f} / {ref['peak_rss_mib']:.0f} MiB "
            f"| **{kl['peak_rss_mib'] / sft['peak_rss_mib']:.2f}x** (<= 1.15x) | **{kl['peak_rss_mib'] / ref['peak_rss_mib']:.2f}x** (<= 0.6x) |"
        )
        fs, fe, ft = r["full_sft"], r["full_kl"], r["full_kl_top_k"]
        full_rows.append(
            f"| {label} | {fs['step_seconds']:.3f} / {fe['step_seconds']:.3f} / {ft['step_seconds']:.3f} s "
            f"| {fe['step_seconds'] / fs['step_seconds']:.2f}x / {ft['step_seconds'] / fs['step_seconds']:.2f}x "
            f"| {_setup(ft, steps) - _setup(fs, steps):.2f} s "
            f"| {fs['peak_rss_mib']:.0f} / {fe['peak_rss_mib']:.0f} / {ft['peak_rss_mib']:.0f} MiB "
            f"| {fe['peak_rss_mib'] / fs['peak_rss_mib']:.2f}x / {ft['peak_rss_mib'] / fs['peak_rss_mib']:.2f}x |"
        )
    return "\n".join([
        "## KL-regularised step vs plain SFT step",
        "",
        "Batch 8 x ~128 tokens (random 50-word user and assistant turns), OOD batch as large as the SFT batch,",
        "KL over all non-pad OOD positions, torch threads 1, one process per variant and round (tiny: best of 3 rounds,",
        "SmolLM2: best of 2; rounds alternate the variants). Peak memory: the process's peak",
        "resident set during training minus its resident set with the libraries loaded and no model (what a GPU's",
        "peak allocation counts: weights, optimiser state, activations, logits), with tensors of 1 MiB or more in their own",
        "memory mappings so that freed memory leaves the resident set (the C heap otherwise keeps it, and the",
        "resident set then overstates live memory by up to 1.5 GiB here). Rerun: `python benchmarks/run.py kl_step`.",
        "",
        "LoRA r16 on all projections. Baseline for time and memory: emlab's plain SFT step (same model, batch, LoRA).",
        "Reference design: the reference code's KL step (a second full model copy for the reference logits,",
        "full-vocabulary logits of every OOD position kept, one forward over SFT and OOD rows together).",
        "",
        "Where the time goes: LoRA leaves the base weights frozen, so a pass with gradients costs about two forwards (no",
        "weight gradients), and the floor of the KL step is (2 SFT + 2 OOD + 1 base forward) / 2 = 2.5x, not the 2.33x of",
        "full fine-tuning; the KL also puts every OOD position through the output head and two softmaxes while SFT scores",
        "only assistant positions. Without the per-step base forward (`kl.base: top_k`) the floor is 2x. The tiny model's",
        "tensors take under 1 MiB: its memory is Python objects, tokenizer and encoded data (the KL run holds a second",
        "dataset), so its memory ratios say nothing about tensors; SmolLM2's do.",
        "",
        "| model | step: SFT / SFT+KL / reference design | time ratio | peak memory: SFT / SFT+KL / reference | memory vs SFT | memory vs reference |",
        "|---|---|---|---|---|---|",
        *lora_rows,
        "",
        "Full fine-tuning: the exact KL keeps a frozen copy of the base model; `kl.base: top_k` instead caches the base's",
        "64 most likely tokens per OOD position once before training and keeps no copy (setup column: the top-k run's",
        "time outside its steady steps, minus the SFT run's: the cache build, one base forward per OOD example drawn).",
        "",
        "| model | step: SFT / KL exact / KL top-k | time vs SFT (exact / top-k) | top-k setup | peak memory: SFT / exact / top-k | memory vs SFT (exact / top-k) |",
        "|---|---|---|---|---|---|",
        *full_rows,
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--variant", choices=list(VARIANTS), action="append")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
    elif args.worker:
        print(json.dumps(worker(args.model, args.variant[0], args.steps)))
    else:
        print(json.dumps(measure(args.model, args.steps, args.variant or list(VARIANTS)), indent=2))
