"""benchmarks/gpu_step.py: its FLOP formula by hand, its card table, and its CPU smoke run end to
end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from benchmark_scripts import BENCHMARKS, load_benchmark

SCRIPT = BENCHMARKS / "gpu_step.py"


@pytest.fixture(scope="module")
def gpu_step():
    yield from load_benchmark("gpu_step")


def test_flops_by_hand(gpu_step):
    # hidden 8, 1 layer, 2 heads (head size 4), 1 kv head (k/v width 4), MLP 16, vocab 10; LoRA r 2
    shape = gpu_step.Shape(8, 1, 2, 1, 16, 10, True, batch=1, seq=3, warmup=1, steps=1)
    assert (
        shape.linear_params() == 8 * 8 + 8 * 4 + 8 * 4 + 8 * 8 + 3 * 8 * 16 == 576
    )  # q k v o gate up down
    assert shape.lora_params(2) == 2 * (16 + 12 + 12 + 16 + 24 + 24 + 24) == 256
    assert (
        shape.attention_flops(3) == 2 * 2 * 8 * (1 + 2 + 3) == 192
    )  # QK^T and AV, positions see 1, 2, 3 keys
    # with grads: 3 tokens x (4 N + 6 P) + 3 x attention; head 4 d V over 2 scored rows
    sft = 3 * (4 * 576 + 6 * 256) + 3 * 192 + 4 * 8 * 10 * 2
    assert sft == 12736
    assert gpu_step.step_flops(shape, False, scored=2, ood_scored=0, r=2) == sft
    # KL adds the OOD pass with grads and its head (2 rows: T - 1), the base forward (2 N per token)
    # and its head
    kl = (
        sft
        + (3 * (4 * 576 + 6 * 256) + 3 * 192 + 4 * 8 * 10 * 2)
        + (3 * 2 * 576 + 192)
        + 2 * 8 * 10 * 2
    )
    assert kl == 29440
    assert gpu_step.step_flops(shape, True, scored=2, ood_scored=2, r=2) == kl


def test_peak_table(gpu_step):
    assert gpu_step.peak_flops("NVIDIA H200") == 989e12
    assert gpu_step.peak_flops("NVIDIA H200 NVL") == 835e12
    assert gpu_step.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_step.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_step.peak_flops("Tesla T4") is None


def test_published_shapes(gpu_step):
    # parameter counts of Qwen2.5-0.5B (494M) and Qwen2.5-7B (7.62B): projections + q/k/v biases +
    # norms + embeddings
    for name, total in (("0.5b", 494_032_768), ("7b", 7_615_616_512)):
        s = gpu_step.SHAPES[name]
        kv = s.kv_heads * s.hidden // s.heads
        biases = s.layers * (s.hidden + 2 * kv)
        norms = (2 * s.layers + 1) * s.hidden
        embeddings = s.vocab * s.hidden * (1 if s.tied else 2)
        assert s.linear_params() + biases + norms + embeddings == total


@pytest.mark.system
def test_cpu_smoke_run(gpu_step):
    """Both variants of the tiny shape through emlab's training loop (one process: the loop's
    accelerate state allows one mixed-precision setting per process)."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import gpu_step; "
        "print(json.dumps([gpu_step.measure_variant('tiny', v, 'cpu') for v in gpu_step.VARIANTS]))"
    )
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, str(SCRIPT.parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sft, kl = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in (sft, kl):
        assert r["device"] == "cpu" and r["precision"] == "bf16" and r["mfu"] is None
        assert r["step_seconds"] > 0 and r["sft_tokens_per_s"] > 0 and r["flops_per_s"] > 0
    assert kl["step_seconds"] > sft["step_seconds"]
    assert kl["all_tokens_per_s"] == pytest.approx(2 * kl["sft_tokens_per_s"])
    assert (
        kl["ood_scored_rows"] == 4 * 63
    )  # scope all: every position of 4 rows of 64 tokens but the last
    assert 2 < kl["flops_per_step"] / sft["flops_per_step"] < 2.6
    text = gpu_step.markdown([sft, kl])
    assert (
        text.startswith("## ")
        and "| tiny (" in text
        and "SFT+KL" in text
        and "unknown peak" in text
    )


def test_needs_a_gpu():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--markdown"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (
        proc.returncode != 0
        and "no CUDA device" in proc.stderr
        and "--device cpu --shape tiny" in proc.stderr
    )
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode != 0 and "only the smoke shape" in proc.stderr
