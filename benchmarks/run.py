"""Run every benchmark and write benchmarks/RESULTS.md (ratios measured side by side).

    make bench        # or: python benchmarks/run.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.platform()}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def kl_step(model: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "kl_step.py"), "--model", model, "--steps", str(steps)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main() -> None:
    rows = []
    for model, steps in (("tiny", 12), ("smollm2", 4)):
        r = kl_step(model, steps)
        rows.append(
            f"| KL step / SFT step, LoRA r16 all projections, batch 8 x ~128 tokens, {model} | "
            f"{r['sft']['step_seconds']:.3f} s / {r['sft_kl']['step_seconds']:.3f} s | **{r['time_ratio']:.2f}x** (target <= 2.5x) | "
            f"{r['sft']['peak_rss_mib']:.0f} / {r['sft_kl']['peak_rss_mib']:.0f} MiB | **{r['memory_ratio']:.2f}x** (target <= 1.15x) |"
        )
    text = "\n".join([
        "# Benchmarks",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}, torch threads 2. Rerun: `make bench`.",
        "Each ratio is measured side by side in one run; the baseline is the plain SFT step of the same model,",
        "batch and LoRA. Memory is the peak resident set size of a process running only that variant.",
        "",
        "| benchmark | time (baseline / emlab) | time ratio | peak memory (baseline / emlab) | memory ratio |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Not yet measured (issue #6): the reference design's memory (second model copy and cached",
        "full-vocabulary logits), batched generation, judging throughput, sweep cost, the study's profile,",
        "GPU throughput.",
        "",
    ])
    (HERE / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
