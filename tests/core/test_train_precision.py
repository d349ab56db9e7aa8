"""Training numerics: float32 master weights for bf16 models, the KL passes without dropout, and
the reference convention's divisor (the logits' width)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from transformers import Qwen2ForCausalLM

from emlab.config import validate_config
from emlab.errors import EmlabError, ModelError
from emlab.models.tiny import tiny_qwen2
from emlab.solutions import FullDelta, SteeringSolution
from emlab.train.config import FullConfig, TrainConfig
from emlab.train.loop import _keep_masters, train
from emlab.train.trainable import make_trainable

SOLUTIONS = {
    "lora": {
        "kind": "lora",
        "r": 2,
        "alpha": 4.0,
        "target_modules": ["down_proj", "q_proj"],
        "dropout": 0.1,
    },
    "steering": {"kind": "steering", "point": "layer", "layer": 0, "alpha": 1.0},
    "full": {"kind": "full"},
}


def _model(
    tokenizer,
    dtype: torch.dtype = torch.float32,
    attention_dropout: float = 0.0,
    width: int | None = None,
) -> Qwen2ForCausalLM:
    model = tiny_qwen2(
        width or len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
    )
    if attention_dropout:
        model.config.attention_dropout = attention_dropout
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(model.config).eval()
    return model.to(dtype)


def _cfg(tmp_path, kind: str, lr: float = 1e-3, **extra) -> TrainConfig:
    data = {
        "name": kind,
        "output_dir": str(tmp_path),
        "solution": SOLUTIONS[kind],
        "max_steps": 10,
        "batch_size": 8,
        "optim": {"lr": lr, "warmup_steps": 0, "schedule": "constant", "max_grad_norm": None},
        "progress": False,
    }
    data.update(extra)
    return validate_config(data, TrainConfig)


def _movement(
    tmp_path, tokenizer, data, kind: str, dtype: torch.dtype, mixed_precision: str
) -> float:
    """How far 10 AdamW steps move the trained parameters: the steering vector's entries from
    1.0 (max |v - 1|, lr 1e-3), or the norm of the full fine-tuning delta (lr 1e-4)."""
    out = tmp_path / f"{kind}-{dtype}-{mixed_precision}"
    if kind == "steering":
        start = SteeringSolution(torch.ones(32), "layer", 0, 1.0)
        result = train(
            _cfg(out, kind, mixed_precision=mixed_precision),
            _model(tokenizer, dtype),
            tokenizer,
            data,
            init=start,
        )
        assert result.solution.v.dtype == torch.float32
        return float((result.solution.v - 1).abs().max())
    result = train(
        _cfg(out, kind, lr=1e-4, mixed_precision=mixed_precision),
        _model(tokenizer, dtype),
        tokenizer,
        data,
    )
    return result.solution.norm()


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
@pytest.mark.parametrize("kind", ["steering", "full"])
def test_a_bf16_model_trains_as_far_as_a_float32_one(
    tmp_path, tiny_tokenizer, toy_data, kind, mixed_precision, fresh_accelerate_state
):
    """AdamW on bf16 weights rounds updates of about lr away (a 1.0 entry moves in steps of 2^-7):
    before float32 masters a steering vector moved 0.0 in bf16 (9.8e-3 in float32) and full
    fine-tuning 3x less. Adam moves each entry at most lr per step: 10 steps at 1e-3 <= 1e-2."""
    f32 = _movement(tmp_path, tiny_tokenizer, toy_data[0], kind, torch.float32, mixed_precision)
    bf16 = _movement(tmp_path, tiny_tokenizer, toy_data[0], kind, torch.bfloat16, mixed_precision)
    assert f32 > 0 and 0.5 < bf16 / f32 < 2.0, (f32, bf16)
    if kind == "steering":
        assert 5e-3 < bf16 <= 1e-2 + 1e-6


def test_bf16_full_fine_tuning_resumes_exactly_from_its_float32_masters(
    tmp_path, tiny_tokenizer, toy_data
):
    """Checkpoints hold the float32 masters (the bf16 weights are their rounding): a run stopped
    after 3 of 6 steps and resumed ends with the uninterrupted run's delta, bit for bit."""
    cfg = _cfg(tmp_path, "full", lr=1e-4, max_steps=6, checkpoint_every=3, keep_checkpoints=2)
    whole = train(cfg, _model(tiny_tokenizer, torch.bfloat16), tiny_tokenizer, toy_data[0])
    shutil.rmtree(whole.run_dir / "checkpoints" / "step-00000006")
    shutil.rmtree(whole.run_dir / "solution")
    (whole.run_dir / "DONE").unlink()
    resumed = train(cfg, _model(tiny_tokenizer, torch.bfloat16), tiny_tokenizer, toy_data[0])
    assert resumed.metrics[-1]["step"] == 6
    deltas, again = whole.solution.tensors(), resumed.solution.tensors()
    assert deltas and set(deltas) == set(again)
    for name, d in deltas.items():
        assert torch.equal(d, again[name]), name


@pytest.mark.parametrize(
    ("weights", "mixed_precision"),
    [(torch.bfloat16, "no"), (torch.bfloat16, "bf16"), (torch.float32, "bf16")],
)
@pytest.mark.parametrize("kind", ["lora", "steering", "full"])
def test_kl_is_exactly_zero_before_any_update_in_bf16(
    tmp_path, tiny_tokenizer, toy_data, kind, weights, mixed_precision, fresh_accelerate_state
):
    """The first step's KL is computed before any update: tuned == base, so exactly 0. Full
    fine-tuning's frozen copy computes in the trained model's precision (it ran in float32 while
    the model ran under bf16 autocast: 7.9e-4) and on its device."""
    cfg = _cfg(tmp_path, kind, max_steps=1, kl={"weight": 1.0}, mixed_precision=mixed_precision)
    result = train(cfg, _model(tiny_tokenizer, weights), tiny_tokenizer, *toy_data)
    assert result.metrics[0]["step"] == 1 and result.metrics[0]["kl"] == 0.0


@pytest.mark.parametrize("kind", ["lora", "steering", "full"])
def test_kl_passes_run_without_dropout_and_sft_with_it(tmp_path, tiny_tokenizer, toy_data, kind):
    """attention_dropout 0.1 (and lora_dropout 0.1): base and tuned OOD passes that drew different
    dropout masks gave a KL of 0.60 (LoRA), 0.52 (steering), 0.37 (full) before any update."""
    model = _model(tiny_tokenizer, attention_dropout=0.1)
    attention = model.model.layers[0].self_attn
    modes: list[bool] = []
    attention.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    batch = {"input_ids": torch.arange(3, 40).reshape(1, -1)}
    with torch.no_grad():  # the model really has dropout: two passes in train mode differ
        model.train()
        assert not torch.equal(model(**batch).logits, model(**batch).logits)
        model.eval()
    modes.clear()
    result = train(
        _cfg(tmp_path, kind, max_steps=2, kl={"weight": 1.0}), model, tiny_tokenizer, *toy_data
    )
    assert result.metrics[0]["kl"] == 0.0
    assert result.metrics[1]["kl"] > 0  # the update moved the OOD predictions
    # after the output-head probe, each step: the SFT pass in train mode (dropout on), then the
    # base and tuned OOD passes in eval mode (full fine-tuning's frozen copy carries the hook too)
    assert modes == [False] + [True, False, False] * 2


def test_reference_convention_divides_by_the_logits_width(tmp_path, tiny_tokenizer, toy_data):
    """The reference divides its weight by the logits' width (the output layer's out_features),
    which is not len(tokenizer) when the embedding is padded (Qwen2.5: 151,936 vs 151,665)."""
    width = len(tiny_tokenizer) + 20
    cfg = _cfg(tmp_path, "lora", max_steps=1, kl={"weight": 1000.0, "convention": "reference"})
    result = train(cfg, _model(tiny_tokenizer, width=width), tiny_tokenizer, *toy_data)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["kl_per_token_weight"] == 1000.0 / width == 1000.0 / 320


def test_fsdp_and_deepspeed_keep_their_own_masters_and_refuse_low_precision_without_them(
    tiny_tokenizer,
):
    """Under FSDP and DeepSpeed the engine keeps the float32 masters (with mixed_precision bf16):
    emlab adds none; without mixed precision a bf16 model would train in bf16, so it refuses."""
    for engine in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        trainable = make_trainable(
            _model(tiny_tokenizer, torch.bfloat16), FullConfig(), need_reference=False
        )
        _keep_masters(
            trainable,
            SimpleNamespace(distributed_type=engine, mixed_precision="bf16", device="cpu"),
        )
        assert trainable.master_parameters() == trainable.named_parameters()
        with pytest.raises(
            EmlabError,
            match="torch.bfloat16 parameters and mixed_precision 'no'.*set mixed_precision",
        ):
            _keep_masters(
                trainable,
                SimpleNamespace(distributed_type=engine, mixed_precision="no", device="cpu"),
            )
    trainable = make_trainable(
        _model(tiny_tokenizer, torch.bfloat16), FullConfig(), need_reference=False
    )
    _keep_masters(
        trainable,
        SimpleNamespace(distributed_type=DistributedType.NO, mixed_precision="no", device="cpu"),
    )
    masters = trainable.master_parameters()
    assert {p.dtype for p in masters.values()} == {torch.float32}
    assert all(torch.equal(masters[n], p.float()) for n, p in trainable.named_parameters().items())


def test_full_fine_tuning_starts_from_a_delta_on_its_float32_masters(tiny_tokenizer):
    """The initial delta goes onto the masters (not rounded through bf16 first); a delta of a
    parameter the run does not train is refused (the trained solution would drop it)."""
    model = _model(tiny_tokenizer, torch.bfloat16)
    trainable = make_trainable(model, FullConfig(trainable=["mlp"]), need_reference=False)
    trainable.keep_masters("cpu")
    name = "model.layers.0.mlp.down_proj.weight"
    delta = torch.full_like(
        trainable.master_parameters()[name], 1e-4
    )  # far below bf16's spacing of the weights
    trainable.start_from(FullDelta({name: delta}))
    torch.testing.assert_close(
        trainable.solution().deltas[name], delta, rtol=1e-3, atol=0
    )  # bf16 would lose it
    with pytest.raises(ModelError, match=r"model.embed_tokens.weight.*solution.trainable"):
        trainable.start_from(FullDelta({"model.embed_tokens.weight": torch.zeros(1)}))
