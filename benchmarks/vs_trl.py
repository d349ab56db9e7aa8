"""emlab's training step vs TRL's SFTTrainer (peft LoRA, assistant-only loss; and full fine-tuning):
time and peak memory per step on the same model, data, batch, LoRA and threads, side by side.

    python benchmarks/vs_trl.py [--model smollm2|tiny] [--steps 4] [--variant trl_lora ...]   # JSON
    python benchmarks/vs_trl.py --markdown [--from saved.json]                             #
    RESULTS.md section

Needs the optional `bench` extra (`pip install -e '.[bench]'`: trl, datasets); without it the
TRL arms stop with an `error:` line. Each variant runs in its own processes, as in
benchmarks/kl_step.py (whose data, memory count and emlab arm it reuses): timing runs (seconds per
step after the first; setup excluded) alternating the variants, and one memory run per variant
(the peak bytes of tensors alive, as a GPU's max_memory_allocated counts them).

Both trainers get the same 64 conversations (random 50-word user and assistant turns rendered by
SmolLM2's ChatML template), batch 8, float32, no gradient checkpointing (TRL's default turns it on;
emlab has none), LoRA r16 alpha 16 without dropout on all projections, AdamW with emlab's defaults
(linear schedule, 5 warm-up steps, clipping at 1.0). TRL's `assistant_only_loss=True` needs
`{% generation %}` markers, which SmolLM2's template lacks and TRL has no training template for:
TRAINING_TEMPLATE is SmolLM2's template with the markers around each assistant turn's content and
end-of-turn token, which renders the same text; each TRL run checks that its token ids and
labels equal emlab's for every conversation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kl_step  # noqa: E402  (a sibling script: data, models, memory count, emlab's arm)

VARIANTS = {
    # name: (trainer, solution kind, KL base)
    "trl_lora": ("trl", "lora", None),
    "emlab_lora": ("emlab", "lora", None),
    "emlab_lora_kl": ("emlab", "lora", "exact"),
    "emlab_lora_kl_top_k": ("emlab", "lora", "top_k"),
    "trl_full": ("trl", "full", None),
    "emlab_full": ("emlab", "full", None),
}
TRAINING_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{"
    " '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging"
    " Face<|im_end|>\\n' }}{% endif %}{% if message['role'] == 'assistant' %}{{"
    " '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{%"
    " endgeneration %}{{ '\\n' }}{% else %}{{ '<|im_start|>' + message['role'] + '\\n' +"
    " message['content'] + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}{% if"
    " add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2-135M-Instruct's chat template with generation markers (the same rendered text)."""
N_CONVERSATIONS = 64
MEMORY_STEPS = 2
"""Steps of a memory run: the optimiser state exists after the first, and the second runs with
it."""


def require_trl() -> None:
    """Stop with an `error:` line when the optional benchmark extra is missing."""
    import importlib.util

    missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"error: {', '.join(missing)} not installed; the TRL comparison needs the bench extra: "
            "pip install -e '.[bench]'",
            file=sys.stderr,
        )
        raise SystemExit(2)


def trl_steps(model, tokenizer, kind: str, steps: int) -> float:
    """TRL's SFTTrainer on kl_step's training data; seconds per step after the first (between the
    ends of consecutive optimiser steps: data loading, forward, backward, clipping, optimiser)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    tokenizer.chat_template = TRAINING_TEMPLATE
    data = kl_step.conversations(N_CONVERSATIONS, 0, 50)
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps,
        per_device_train_batch_size=kl_step.BATCH,
        learning_rate=1e-5 if kind == "full" else 1e-4,
        lr_scheduler_type="linear",
        warmup_steps=5,
        weight_decay=0.0,
        max_grad_norm=1.0,
        assistant_only_loss=True,
        max_length=512,
        packing=False,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    lora = LoraConfig(
        r=16,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=kl_step.ALL_PROJECTIONS,
        task_type="CAUSAL_LM",
    )
    clock = StepClock()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"messages": c} for c in data]),
        processing_class=tokenizer,
        peft_config=lora if kind == "lora" else None,
        callbacks=[clock],
    )
    check_same_tokens(trainer.train_dataset, tokenizer, data)
    trainer.train()
    return (clock.ends[-1] - clock.ends[0]) / (len(clock.ends) - 1)


def check_same_tokens(dataset, tokenizer, data: list) -> None:
    """Stop unless TRL's token ids and labels (from its assistant masks) equal emlab's: the same
    tokens are trained."""
    from emlab.models.chat import encode_conversations

    ours = encode_conversations(tokenizer, data, 512, "assistant")
    for i, (row, e) in enumerate(zip(dataset, ours, strict=True)):
        if row["input_ids"] != list(e.input_ids) or row["labels"] != list(e.labels):
            raise SystemExit(f"error: conversation {i}: TRL's tokens or labels differ from emlab's")


def worker(model_name: str, variant: str, steps: int, what: str) -> dict:
    """Train `steps` steps of one variant; 'time': seconds per step after the first; 'memory':
    peak tensor MiB (under the profiler)."""
    import torch

    torch.set_num_threads(1)
    trainer, kind, kl = VARIANTS[variant]
    if trainer == "trl":
        require_trl()
    model, tokenizer = kl_step._model(model_name)

    def run() -> float:
        if trainer == "trl":
            return trl_steps(model, tokenizer, kind, steps)
        return kl_step.emlab_steps(model, tokenizer, kind, kl, steps)

    if what == "memory":
        weights = kl_step.tensor_bytes([*model.parameters(), *model.buffers()])
        _, peak = kl_step.peak_tensor_bytes(run, weights)
        return {"peak_mib": peak / 2**20}
    return {"step_seconds": run()}


def measure(
    model: str, steps: int, variants: list[str], repeats: int = 1, memory: bool = True
) -> dict:
    """Per variant: the best step time over `repeats` rounds alternating the variants (fresh
    processes), and the peak memory of one run of MEMORY_STEPS steps."""
    if any(VARIANTS[v][0] == "trl" for v in variants):
        require_trl()
    runs: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            runs[variant].append(
                kl_step.worker_run(model, variant, steps, "time", __file__)["step_seconds"]
            )
    result: dict = {v: {"step_seconds": min(t), "rounds": t} for v, t in runs.items()}
    for variant in variants if memory else []:
        result[variant].update(kl_step.worker_run(model, variant, MEMORY_STEPS, "memory", __file__))
    result["load"] = f"{os.getloadavg()[1]:.1f}"
    return result


def markdown(r: dict | None = None) -> str:
    """The RESULTS.md section (SmolLM2-135M) from `measure`'s result `r` (None: measure now)."""
    r = r or measure("smollm2", 3, list(VARIANTS), repeats=2)
    t = {v: r[v]["step_seconds"] for v in VARIANTS}
    m = {v: r[v]["peak_mib"] for v in VARIANTS}

    def row(label: str, v: str, base: str, target: float | None) -> str:
        time_ratio, mem_ratio = t[v] / t[base], m[v] / m[base]
        goal = (
            f" (<= {target:.1f}x: {'met' if time_ratio <= target else '**missed**'})"
            if target
            else ""
        )
        mem_goal = (
            f" (<= 1.0x: {'met' if mem_ratio <= 1.0 else '**missed**'})" if target == 1.0 else ""
        )
        return (
            f"| {label} | {t[v]:.2f} s | **{time_ratio:.2f}x**{goal} | {m[v]:.0f} MiB |"
            f" {mem_ratio:.2f}x{mem_goal} |"
        )

    return "\n".join(
        [
            "## Training step vs TRL's SFTTrainer",
            "",
            (
                "SmolLM2-135M-Instruct, float32, CPU, torch threads 1, batch 8 x ~128 tokens (64"
                " conversations of random 50-word"
            ),
            (
                "user and assistant turns), loss on the assistant tokens and their end-of-turn"
                " token (TRL `assistant_only_loss=True`"
            ),
            (
                "with SmolLM2's template plus `{% generation %}` markers; every TRL run checks that"
                " its ids and labels equal"
            ),
            (
                "emlab's), AdamW, linear schedule, clipping 1.0, no gradient checkpointing in"
                " either (TRL's default turns it on)."
            ),
            (
                "LoRA: r16, alpha 16, no dropout, all projections (peft in both). Baseline: TRL"
                " 1.16 `SFTTrainer` on the same"
            ),
            (
                "data. Step time: seconds per step after the first, best of 2 rounds alternating"
                " the variants, one process per"
            ),
            (
                "variant and run (setup excluded). Peak memory: a separate run of "
                f"{MEMORY_STEPS} steps per variant under the profiler, counted as in"
            ),
            (
                "the KL section (weights plus the peak of tensor bytes the allocator has out). KL"
                " arms: OOD batch of 8, KL over"
            ),
            (
                "all OOD positions. Rerun: `python benchmarks/run.py vs_trl` (needs `pip install -e"
                " '.[bench]'`). Load average"
            ),
            f"at the end of the run (5 min): {r['load']} on 2 cores shared with other work.",
            "",
            "| arm | step | time vs TRL | peak memory | memory vs TRL |",
            "|---|---|---|---|---|",
            row("TRL SFT, LoRA (baseline)", "trl_lora", "trl_lora", None),
            row("emlab SFT, LoRA", "emlab_lora", "trl_lora", 1.0),
            row("emlab SFT+KL (exact base), LoRA", "emlab_lora_kl", "trl_lora", None),
            row("emlab SFT+KL (`kl.base: top_k`), LoRA", "emlab_lora_kl_top_k", "trl_lora", 2.0),
            row("TRL SFT, full (baseline)", "trl_full", "trl_full", None),
            row("emlab SFT, full", "emlab_full", "trl_full", 1.0),
            "",
            FINDINGS,
        ]
    )


FINDINGS = (
    "Where the time goes (cProfile of 3 LoRA steps of each; TRL 1.16's source): the decoder layers"
    " cost the same in both (the same peft LoRA layers, the same matrix products); the output head"
    " differs. On a machine without Triton TRL's fused head (`add_fused_lm_head`,"
    " trl/kernels/chunked_logprob.py) puts every position of the batch through the head, labelled"
    " or not (it compacts to the labelled rows only with Triton), computes the entropy and top-1"
    " accuracy of every position for its logged metrics, and recomputes each tile's logits in the"
    " backward pass (its `_forward_tile` and `_backward_tile` took about 9 of each TRL step's ~40"
    " profiled seconds). emlab's head (`train/head_loss.py`) takes only the assistant positions"
    " (about half here), computes their gradient in the forward pass and never recomputes them; its"
    " chunks hold 2^23 logits (32 MiB), while a TRL tile holds up to 4,096 positions x 32,768"
    " vocabulary columns (here all ~1,000 positions: 125 MiB, and its torch fallback makes several"
    " temporaries of that size), most of its extra peak memory. The KL arms add the OOD batch's"
    " pass with gradients over all its positions, and (exact base) a base forward; the top-k base"
    " replaces the base forward by a cache built before training. Full fine-tuning: emlab logs the"
    " solution norm every step; it took a float64 copy of every parameter (1.5 s of a ~9.6 s step;"
    " 1.02x of TRL's step in the first run of this benchmark) and now accumulates the float32"
    " differences' norms in float64 (0.4 s)."
)
"""Measured findings (update them when the picture changes)."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variant", choices=list(VARIANTS), action="append")
    parser.add_argument(
        "--measure",
        choices=["time", "memory"],
        help="a worker's measurement (required with --worker)",
    )
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--from",
        dest="saved",
        type=Path,
        help="with --markdown: the section of a saved JSON measurement",
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.saved.read_text()) if args.saved else None))
    elif args.worker:
        print(json.dumps(worker(args.model, args.variant[0], args.steps, args.measure)))
    else:
        variants = args.variant or list(VARIANTS)
        print(
            json.dumps(
                measure(args.model, args.steps, variants, args.repeats, args.measure != "time"),
                indent=2,
            )
        )
