"""Analysis sweeps: a K-point efficiency sweep vs K single loss evaluations, and a steering
sweep batched across scales vs one scale at a time.

    python benchmarks/sweeps.py [--model tiny|smollm2] [--reps 3]   # JSON for one model
    python benchmarks/sweeps.py --markdown                            # RESULTS.md section

Efficiency: `LossEvaluator` construction (tokenisation, once) plus `efficiency_curve` over
K = 11 multipliers (np.linspace(0, 2, 11), the study's grid; base loss and m = 1 included)
of a LoRA (r 8 on every projection), against K calls of `evaluator.evaluate(lora.scaled(m))`
on an evaluator built beforehand (forward passes only). Steering: the same evaluator's
`evaluate_many` over K scales of a steering vector (several scales per forward pass), against
K `evaluate` calls. Arms alternate `--reps` times in one process; each arm's best time counts.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from emlab.analysis.loss import LossEvaluator
    from emlab.models.modules import HookPoint
    from emlab.solutions import LoraSolution

K = 11
TARGET = 1.15
NOISE = 0.05
"""A steering speed-up within 5% of 1 counts as no win (run-to-run noise on this machine)."""
WORDS = "the cat sat on a mat and the dog ran to the park with a ball under blue sky".split()
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SIZES = {"tiny": (256, 32), "smollm2": (8, 8)}
"""Conversations and batch size per model (the tiny one as the world study's held-out set)."""
STEERING: dict[str, list[tuple[HookPoint, int]]] = {
    "tiny": [("mlp", 1), ("layer", 2)],
    "smollm2": [("mlp", 15)],
}
"""Steering points per model: the MLP output of the middle layer (emlab's default point) and, for
the tiny model, the world study's own (output of layer 2 of 3)."""


def conversations(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """Single-turn chats of ~12-word turns."""
    rng = random.Random(seed)
    return [
        [
            {"role": "user", "content": " ".join(rng.choices(WORDS, k=12))},
            {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=12))},
        ]
        for _ in range(n)
    ]


def model_and_tokenizer(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The world-sized tiny Qwen2 (d 64, 3 layers) on a BPE tokenizer, or SmolLM2-135M."""
    if name == "tiny":
        from emlab.models.tiny import tiny_qwen2, train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer([" ".join(WORDS)] * 20, vocab_size=300)
        return tiny_qwen2(len(tokenizer), hidden_size=64, num_layers=3, num_heads=4), tokenizer
    from emlab.models.config import ModelConfig
    from emlab.models.load import load_model

    return load_model(ModelConfig(name_or_path=name))


def random_lora(model: PreTrainedModel) -> LoraSolution:
    """A random rank-8 LoRA on every projection."""
    import torch

    from emlab.solutions import LoraSolution

    gen = torch.Generator().manual_seed(0)
    adapters = {
        name: (
            0.1 * torch.randn(8, module.in_features, generator=gen),
            0.1 * torch.randn(module.out_features, 8, generator=gen),
        )
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in PROJECTIONS
    }
    return LoraSolution(adapters, r=8, alpha=8.0)


def best(reps: int, arms: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best wall time of each arm over `reps` alternating runs."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(reps):
        for name, arm in arms.items():
            start = time.perf_counter()
            arm()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def measure(model_name: str = "tiny", reps: int = 3) -> dict:
    """Both comparisons on one model; times in seconds and the ratios."""
    import numpy as np
    import torch

    from emlab.analysis.efficiency import efficiency_curve
    from emlab.analysis.loss import LossEvaluator
    from emlab.solutions import SteeringSolution

    torch.set_num_threads(1)
    model, tokenizer = model_and_tokenizer(model_name)
    n_convs, batch_size = SIZES[model_name]
    convs = conversations(n_convs)
    lora = random_lora(model)
    ms = np.linspace(0.0, 2.0, K).tolist()
    evaluator = LossEvaluator(model, tokenizer, convs, batch_size=batch_size)
    evaluator.evaluate(None)  # warm-up

    def sweep() -> LossEvaluator:
        built = LossEvaluator(model, tokenizer, convs, batch_size=batch_size)
        efficiency_curve(built, lora, "lora", ms)
        return built

    passes: list[int] = []
    handle = model.register_forward_pre_hook(lambda mod, args: passes.append(1))
    sweep()
    handle.remove()
    # the baseline's evaluators are built beforehand, one per run: an evaluator keeps the base
    # model's
    # loss once computed, and the baseline is K forward sweeps of the data, m = 0 included
    fresh = [LossEvaluator(model, tokenizer, convs, batch_size=batch_size) for _ in range(reps)]
    efficiency = best(
        reps,
        {
            "sweep": sweep,
            "singles": lambda: (lambda e: [e.evaluate(lora.scaled(m)) for m in ms])(fresh.pop()),
            "tokenise": lambda: LossEvaluator(model, tokenizer, convs, batch_size=batch_size),
        },
    )
    steering = []
    v = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    for point, layer in STEERING[model_name]:
        scaled = [SteeringSolution(v, point, layer, alpha=1.0).scaled(m) for m in ms]
        times = best(
            reps,
            {
                "batched": lambda s=scaled: evaluator.evaluate_many(s),
                "loop": lambda s=scaled: [evaluator.evaluate(x) for x in s],
            },
        )
        steering.append(
            {"point": point, "layer": layer, **times, "speedup": times["loop"] / times["batched"]}
        )
    return {
        "model": model_name,
        "conversations": n_convs,
        "batches": len(evaluator.batches),
        "tokens": evaluator.n_tokens,
        "k": K,
        "efficiency": {
            **efficiency,
            "forward_passes": len(passes),
            "ratio": efficiency["sweep"] / efficiency["singles"],
        },
        "scales_per_pass": evaluator.max_rows // batch_size,
        "steering": steering,
    }


def markdown() -> str:
    """The RESULTS.md section: the tiny world-sized model (5 reps) and SmolLM2 (2 reps)."""
    eff_rows, steer_rows = [], []
    for model, reps in (("tiny", 5), ("smollm2", 2)):
        r = measure(model, reps)
        e = r["efficiency"]
        met = "met" if e["ratio"] <= TARGET else "**missed**"
        eff_rows.append(
            f"| {model} | {r['conversations']} conv., {r['batches']} batch(es), {r['tokens']}"
            f" scored tokens | {e['singles']:.2f} s | {e['sweep']:.2f} s (tokenising"
            f" {e['tokenise']:.2f} s) | {e['forward_passes'] // r['batches']} |"
            f" **{e['ratio']:.2f}x** ({met}) |"
        )
        for s in r["steering"]:
            won = (
                "met"
                if s["speedup"] >= 1 + NOISE
                else "**at par: missed**"
                if s["speedup"] > 1 - NOISE
                else "**missed**"
            )
            steer_rows.append(
                f"| {model} | {s['point']} of layer {s['layer']} | {r['scales_per_pass']} |"
                f" {s['loop']:.2f} s | {s['batched']:.2f} s | **{s['speedup']:.2f}x** ({won}) |"
            )
    return "\n".join(
        [
            "## Analysis sweeps: efficiency sweep vs single evaluations, batched steering scales",
            "",
            (
                f"K = {K} multipliers (np.linspace(0, 2, {K}), the study's grid), torch threads 1,"
                " best of 5 (tiny) or 2 (SmolLM2)"
            ),
            (
                "alternating runs. Models: the world-sized tiny Qwen2 (d 64, 3 layers, the study's"
                " batch 32) and"
            ),
            (
                "SmolLM2-135M-Instruct (batch 8); a random rank-8 LoRA on every projection; random"
                " steering vectors."
            ),
            "",
            (
                "Efficiency sweep: building the `LossEvaluator` (the only tokenisation) plus"
                " `efficiency_curve` over the K"
            ),
            (
                "multipliers, whose base loss and m = 1 loss come from the m = 0 and m = 1 points."
                " Baseline: K"
            ),
            (
                "`evaluator.evaluate(lora.scaled(m))` calls on a fresh evaluator built beforehand,"
                " i.e. K forward sweeps of the"
            ),
            (
                "data and nothing else (an evaluator keeps the base model's value once computed)."
                f" Before this change the sweep evaluated m = 1 and the base again ({K + 2}"
                " evaluations for"
            ),
            f"{K} points, {(K + 2) / K:.2f}x by count).",
            "",
            (
                "| model | data | K single evaluations | K-point sweep | evaluations per batch |"
                " ratio (target <= 1.15x) |"
            ),
            "|---|---|---|---|---|---|",
            *eff_rows,
            "",
            (
                "Steering sweep over the same K scales: `evaluate_many`, several scales per forward"
                " pass (up to 64 rows):"
            ),
            (
                "the batch runs once up to the steered module and is tiled K times from there (row"
                " block k gets vector k)."
            ),
            "Baseline: one `evaluate` per scale (hook on, forward, hook off).",
            "",
            (
                "| model | steered module | scales per pass | one scale at a time | batched across"
                " scales | speed-up (target > 1x, by more than 5%) |"
            ),
            "|---|---|---|---|---|---|",
            *steer_rows,
            "",
            (
                "Where the time goes: a batched pass saves the layers before the steered module"
                " (computed once, not K"
            ),
            (
                "times) and little else on a CPU: the part after it runs on K times the rows, and a"
                " wider pass costs more"
            ),
            (
                "per row once its activations outgrow the cache (tiny model at batch 32: 2 scales a"
                " pass). So the speed-up"
            ),
            (
                "grows with the share of the network before the steered module. Before this change"
                " the batch was repeated"
            ),
            (
                "at the model's input and the batched sweep lost to the loop (0.82x tiny, 0.94x"
                " SmolLM2, output of the"
            ),
            (
                "middle layer). What would close a remaining gap on a CPU: run the layers after the"
                " steered module once per"
            ),
            (
                "scale on the shared prefix's output (no wide pass), which needs the decoder layers"
                " called one by one."
            ),
            "",
            "Rerun: `python benchmarks/run.py sweeps`.",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
    else:
        print(json.dumps(measure(args.model, args.reps), indent=2))
