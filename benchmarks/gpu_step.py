"""LoRA+KL training step vs plain LoRA SFT step on a GPU: tokens/s, model FLOP utilisation (MFU)
and peak memory, for randomly initialised models of Qwen2.5-0.5B's and Qwen2.5-7B's shapes in bf16.

    python benchmarks/gpu_step.py                                # JSON, shapes 0.5b and 7b (CUDA)
    python benchmarks/gpu_step.py --markdown                     # RESULTS.md section
    python benchmarks/gpu_step.py --device cpu --shape tiny      # CPU smoke run of the code path

Both variants run emlab's own training loop (`emlab.train.loop.train`) with LoRA r16 (alpha 16) on
q,k,v,o,gate,up,down, weights in bf16 and `mixed_precision: bf16` (as the shipped Qwen2.5 configs),
rows cut to exactly `seq` tokens (no padding). SFT+KL: kl.weight 1, scope all, base exact (the base
forward through the same weights with the adapters off), OOD batch as large as the SFT batch. The
tokenizer is a byte-level BPE trained in-process (no files needed; its ids are < the vocabulary, and
a step's cost does not depend on them). Each (shape, variant) runs in its own process (peak memory:
torch.cuda.max_memory_allocated). Step time: the loop's own per-step `seconds` (it synchronises
every step: `.item()`, `.cpu()`, the adapter norm of each metrics row), averaged over the steps
after the warm-up.

Model FLOPs per step (matrix products only; norms, activations, rotary, softmaxes, the loop's one
last-position logit row and optimiser are not counted). Per token, N = the decoder's projection
weights (q,k,v,o,gate,up,down over all layers), P = the LoRA parameters, r(d_in + d_out) per
adapted projection. A causal sequence of T tokens costs A(T) = 2 L d T (T+1) in attention products
(QK^T and AV, 2 FLOPs per multiply-add, each position attending to itself and those before it).
The output head costs 2 d V per scored row. Frozen weights get input gradients but no weight
gradients; attention's backward is twice its forward:

    grad_pass(B, T) = B T (2N + 2N) + B T (2P + 2P + 2P) + 3 B A(T)   forward + backward
    base_pass(B, T) = B T 2N + B A(T)                                  forward, adapters off
    SFT step        = grad_pass(B, T) + 4 d V S                        S = assistant (labelled) rows
    SFT+KL step     = SFT step + grad_pass(B, T) + 4 d V S_ood + base_pass(B, T) + 2 d V S_ood

with S_ood = B (T - 1) (scope all). MFU = model FLOPs per step / step seconds / the card's dense
bf16 peak (PEAK_BF16). Tokens/s: SFT rows' input tokens per second (the training data a step
consumes); for SFT+KL also SFT + OOD input tokens per second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

WORDS = "the cat sat on a mat and the dog ran to the park with a ball under blue sky".split()
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK = 16
VARIANTS = ["sft", "kl"]


@dataclass(frozen=True)
class Shape:
    """A Qwen2 decoder's shape (head size = hidden / heads) and the batch it is benchmarked with."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int  # 0: the tokenizer's size
    tied: bool
    batch: int
    seq: int
    warmup: int
    steps: int

    def linear_params(self) -> int:
        """N: weights of q,k,v,o,gate,up,down over all layers (no biases, embeddings or head)."""
        d, kv = self.hidden, self.kv_heads * self.hidden // self.heads
        return self.layers * (2 * d * d + 2 * d * kv + 3 * d * self.intermediate)

    def lora_params(self, r: int = RANK) -> int:
        """P: r (d_in + d_out) per adapted projection over all layers."""
        d, kv, i = self.hidden, self.kv_heads * self.hidden // self.heads, self.intermediate
        return self.layers * r * (2 * (d + d) + 2 * (d + kv) + 3 * (d + i))

    def attention_flops(self, seq: int) -> int:
        """A(T): forward FLOPs of QK^T and AV over one causal sequence of `seq` tokens."""
        return 2 * self.layers * self.hidden * seq * (seq + 1)


SHAPES = {
    # Qwen2.5-0.5B and Qwen2.5-7B (their published config.json), randomly initialised
    "0.5b": Shape(896, 24, 14, 2, 4864, 151936, True, batch=8, seq=512, warmup=3, steps=10),
    "7b": Shape(3584, 28, 28, 4, 18944, 152064, False, batch=4, seq=512, warmup=3, steps=10),
    "tiny": Shape(64, 2, 4, 2, 128, 0, True, batch=4, seq=64, warmup=2, steps=4),  # CPU smoke run
}
PEAK_BF16 = [  # (substring of torch.cuda.get_device_name, dense bf16 FLOP/s); first match wins
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
]


def peak_flops(device_name: str) -> float | None:
    """The card's dense bf16 peak FLOP/s, or None for a card not in PEAK_BF16."""
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def step_flops(shape: Shape, kl: bool, scored: int, ood_scored: int, r: int = RANK) -> float:
    """Model FLOPs of one step (module docstring); `scored`/`ood_scored`: head rows per step."""
    n, p, b, t = shape.linear_params(), shape.lora_params(r), shape.batch, shape.seq
    d_v = shape.hidden * shape.vocab
    grad_pass = b * t * (4 * n + 6 * p) + 3 * b * shape.attention_flops(t)
    flops = grad_pass + 4 * d_v * scored
    if kl:
        base_pass = b * t * 2 * n + b * shape.attention_flops(t)
        flops += grad_pass + 4 * d_v * ood_scored + base_pass + 2 * d_v * ood_scored
    return float(flops)


def conversations(n: int, seed: int, seq: int) -> list[list[dict[str, str]]]:
    """A fixed user turn and a random assistant turn of `seq` words (longer than `seq` tokens, so
    every row is cut to exactly `seq` tokens with the same number of assistant tokens)."""
    rng = random.Random(seed)
    user = " ".join(WORDS[i % len(WORDS)] for i in range(max(4, seq // 8)))
    return [
        [
            {"role": "user", "content": user},
            {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=seq))},
        ]
        for _ in range(n)
    ]


def measure_variant(
    shape_name: str,
    variant: str,
    device: str,
    warmup: int | None = None,
    steps: int | None = None,
    precision: str = "bf16",
    peak_tflops: float | None = None,
) -> dict:
    """Build the model and run `variant` ('sft' or 'kl') through emlab's `train` with
    `mixed_precision: precision` (the weights are bf16 either way); its numbers."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from emlab.config import validate_config
    from emlab.models.tiny import train_bpe_tokenizer
    from emlab.train.config import TrainConfig
    from emlab.train.loop import train

    shape = SHAPES[shape_name]
    warmup, steps = warmup or shape.warmup, steps or shape.steps
    if device == "cpu":
        torch.set_num_threads(1)
    tokenizer = train_bpe_tokenizer([" ".join(WORDS)] * 20, vocab_size=512)
    if shape.vocab == 0:
        shape = Shape(**{**asdict(shape), "vocab": len(tokenizer)})
    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        tie_word_embeddings=shape.tied,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    build_seconds = time.perf_counter() - start
    train_data, ood_data = conversations(64, 0, shape.seq), conversations(64, 1, shape.seq)
    kl = variant == "kl"
    scored = shape.batch * _labelled_per_row(tokenizer, train_data, shape.seq, "assistant")
    ood_scored = shape.batch * _labelled_per_row(tokenizer, ood_data, shape.seq, "all") if kl else 0
    cfg = validate_config(
        {
            "output_dir": tempfile.mkdtemp(prefix="gpu_step-"),
            "data": {"max_length": shape.seq},
            "solution": {"kind": "lora", "r": RANK, "alpha": 16, "target_modules": PROJECTIONS},
            "kl": {"weight": 1.0 if kl else 0.0, "scope": "all", "base": "exact"},
            "max_steps": warmup + steps,
            "batch_size": shape.batch,
            "mixed_precision": precision,
            "progress": False,
        },
        TrainConfig,
    )
    try:
        result = train(cfg, model, tokenizer, train_data, ood_data if kl else None)
    finally:
        shutil.rmtree(cfg.output_dir, ignore_errors=True)  # the run's checkpoint (7B: about 0.5 GB)
    seconds = {row["step"]: row["seconds"] for row in result.metrics if "seconds" in row}
    step_seconds = (seconds[warmup + steps] - seconds[warmup]) / steps
    start = time.perf_counter()
    result.solution.norm()  # what each metrics row adds to a step (it is inside the step time)
    norm_seconds = time.perf_counter() - start
    flops = step_flops(shape, kl, scored, ood_scored)
    cuda = device != "cpu" and torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_tflops * 1e12 if peak_tflops else peak_flops(name) if cuda else None
    tokens = shape.batch * shape.seq
    import peft
    import transformers

    return {
        "shape": shape_name,
        "variant": variant,
        "device": name,
        "date": time.strftime("%Y-%m-%d"),
        "versions": (
            f"torch {torch.__version__}, transformers {transformers.__version__}, peft"
            f" {peft.__version__}"
        ),
        "batch": shape.batch,
        "seq": shape.seq,
        "warmup": warmup,
        "steps": steps,
        "precision": precision,
        "params": sum(p.numel() for p in result.model.parameters()),
        "build_seconds": build_seconds,
        "step_seconds": step_seconds,
        "norm_seconds": norm_seconds,
        "sft_tokens_per_s": tokens / step_seconds,
        "all_tokens_per_s": tokens * (2 if kl else 1) / step_seconds,
        "scored_rows": scored,
        "ood_scored_rows": ood_scored,
        "flops_per_step": flops,
        "flops_per_s": flops / step_seconds,
        "peak_flops": peak,
        "mfu": flops / step_seconds / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def _labelled_per_row(tokenizer, data: list[list[dict[str, str]]], seq: int, loss_on: str) -> int:
    """Scored positions per row (labelled next tokens, as the loop counts them); every row must
    be exactly `seq` tokens with the same count, so that the FLOPs of every step are the same."""
    from emlab.models.chat import IGNORE, encode_all

    encoded = encode_all(tokenizer, data, seq, loss_on)
    per_row = {(len(e.input_ids), sum(label != IGNORE for label in e.labels[1:])) for e in encoded}
    if len(encoded) != len(data) or len(per_row) != 1 or next(iter(per_row))[0] != seq:
        raise RuntimeError(
            f"rows are not all {seq} tokens with equal scored counts: {sorted(per_row)}"
        )
    return next(iter(per_row))[1]


def _worker_run(shape: str, variant: str, device: str, options: list[str], timeout: float) -> dict:
    """One (shape, variant) in a fresh process; {'error': ...} if it failed (its stderr goes to
    ours)."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--shape",
        shape,
        "--variant",
        variant,
        "--device",
        device,
        *options,
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"gpu_step: {shape}/{variant} ran past {timeout:.0f} s", file=sys.stderr, flush=True)
        return {"shape": shape, "variant": variant, "error": f"ran past {timeout:.0f} s"}
    if proc.returncode != 0:
        print(
            f"gpu_step: {shape}/{variant} failed:\n{proc.stderr[-4000:]}",
            file=sys.stderr,
            flush=True,
        )
        return {
            "shape": shape,
            "variant": variant,
            "error": (proc.stderr.strip().splitlines() or ["?"])[-1],
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(
    shapes: list[str], device: str, options: Sequence[str] = (), timeout: float = 140
) -> list[dict]:
    """Every (shape, variant), each in its own process (`options`: its extra flags), SFT first."""
    results = []
    for shape in shapes:
        for variant in VARIANTS:
            print(f"gpu_step: {shape}/{variant} ...", file=sys.stderr, flush=True)
            results.append(_worker_run(shape, variant, device, list(options), timeout))
    return results


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt.rstrip("%")) + ("%" if fmt.endswith("%") else "")


def markdown(results: list[dict]) -> str:
    """The RESULTS.md section for `results` (of `measure`)."""
    ok = [r for r in results if "error" not in r]
    card = ok[0]["device"] if ok else "?"
    peak = ok[0]["peak_flops"] if ok else None
    rows = []
    for r in results:
        if "error" in r:
            rows.append(
                f"| {r['shape']} | {r['variant']} | failed: {r['error'][:120]} |" + " |" * 7
            )
            continue
        sft = next((s for s in ok if s["shape"] == r["shape"] and s["variant"] == "sft"), None)
        ratio = (
            f"**{r['step_seconds'] / sft['step_seconds']:.2f}x** (FLOPs"
            f" {r['flops_per_step'] / sft['flops_per_step']:.2f}x)"
            if sft
            else "n/a"
        )
        ratio = "baseline" if r is sft else ratio
        size = f"{r['params'] / 1e9:.2f}B" if r["params"] >= 1e8 else f"{r['params'] / 1e6:.2f}M"
        rows.append(
            f"| {r['shape']} ({size}) | {'SFT' if r['variant'] == 'sft' else 'SFT+KL'} |"
            f" {r['step_seconds'] * 1e3:.1f} ms ({r['norm_seconds'] * 1e3:.1f}) | {ratio} |"
            f" {r['sft_tokens_per_s']:,.0f} | {r['all_tokens_per_s']:,.0f} |"
            f" {r['flops_per_step'] / 1e12:.3g} | {r['flops_per_s'] / 1e12:.3g} |"
            f" {_num(r['mfu'] and 100 * r['mfu'], '.1f%')} | {_num(r['peak_memory_gib'], '.1f')} |"
        )
    setup = ", ".join(
        f"{s}: batch {SHAPES[s].batch} x {SHAPES[s].seq} tokens"
        for s in dict.fromkeys(r["shape"] for r in results)
    )
    timing = (
        ", ".join(dict.fromkeys(f"{r['warmup']} warm-up + {r['steps']} timed steps" for r in ok))
        or "?"
    )
    peak_text = f"{peak / 1e12:.0f} TFLOP/s dense bf16" if peak else "unknown peak (MFU n/a)"
    return "\n".join(
        [
            "## LoRA+KL step vs plain SFT step on a GPU (tokens/s, MFU)",
            "",
            (
                f"Card: **{card}** ({peak_text}), measured {ok[0]['date'] if ok else '?'};"
                f" {ok[0]['versions'] if ok else ''}."
            ),
            (
                "Randomly initialised models of Qwen2.5-0.5B's and Qwen2.5-7B's shapes, weights"
                f" bf16 with `mixed_precision: {ok[0]['precision'] if ok else '?'}`,"
            ),
            (
                f"LoRA r{RANK} on q,k,v,o,gate,up,down, emlab's own training loop; {setup}, rows"
                " cut to exactly that length"
            ),
            (
                f"(no padding; SFT scores the assistant tokens); {timing}, each variant in its own"
                " process."
            ),
            (
                "Baseline: the plain LoRA SFT step. SFT+KL: kl.weight 1, scope all (every OOD"
                " position), base exact (a forward"
            ),
            "through the same weights with the adapters off), OOD batch as large as the SFT batch.",
            (
                "Step: the loop's own per-step seconds (it synchronises each step); in brackets the"
                " adapter-norm part of each"
            ),
            (
                "step's metrics row. Tokens/s: SFT input tokens per second, then SFT + OOD input"
                " tokens per second. Model FLOPs"
            ),
            (
                "(matrix products only): frozen weights get input gradients and no weight"
                " gradients, LoRA both, attention"
            ),
            (
                "counted causally, the head only over scored rows, plus the base forward for the"
                " KL; the formula is in"
            ),
            (
                "`benchmarks/gpu_step.py`'s docstring (the FLOP floor of SFT+KL is about 2.5x SFT)."
                " Peak memory:"
            ),
            "torch.cuda.max_memory_allocated of the variant's process.",
            (
                "Rerun (a CUDA machine, a few minutes): `python benchmarks/gpu_step.py --markdown`,"
                " or `python benchmarks/run.py gpu_step`."
            ),
            "",
            (
                "| shape | variant | step (norm) | time vs SFT | SFT tokens/s | SFT+OOD tokens/s |"
                " TFLOP/step | TFLOP/s | MFU | peak memory GiB |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", choices=list(SHAPES), action="append", help="default: 0.5b and 7b"
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: the shape's)")
    parser.add_argument("--steps", type=int, help="timed steps (default: the shape's)")
    parser.add_argument(
        "--mixed-precision",
        choices=["bf16", "no"],
        default="bf16",
        help="the loop's mixed_precision (default bf16)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, help="the card's dense bf16 peak, for a card not in PEAK_BF16"
    )
    parser.add_argument(
        "--timeout", type=float, default=140, help="seconds per variant's process (default 140)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the RESULTS.md section")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = args.shape or ["0.5b", "7b"]
    if args.worker:
        result = measure_variant(
            shapes[0],
            args.variant,
            args.device,
            args.warmup,
            args.steps,
            args.mixed_precision,
            args.peak_tflops,
        )
        print(json.dumps(result))
        return
    if args.device == "cpu" and shapes != ["tiny"]:
        raise SystemExit(
            "gpu_step: --device cpu runs only the smoke shape: --device cpu --shape tiny"
        )
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                "gpu_step: no CUDA device: this benchmark needs a GPU. For a CPU smoke run of its"
                " code path: python benchmarks/gpu_step.py --device cpu --shape tiny"
            )
    options = ["--mixed-precision", args.mixed_precision]
    for flag, value in (
        ("--warmup", args.warmup),
        ("--steps", args.steps),
        ("--peak-tflops", args.peak_tflops),
    ):
        options += [flag, str(value)] if value else []
    results = measure(shapes, args.device, options, args.timeout)
    print(markdown(results) if args.markdown else json.dumps(results, indent=2))
    if any("error" in r for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
