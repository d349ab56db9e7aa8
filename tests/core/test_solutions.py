"""Solutions: true norms, scaling, orthogonal noise, application, save/load."""

from __future__ import annotations

import json
import math

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.helpers import rescale_adapter_scale

from emlab.errors import ModelError
from emlab.solutions import FullDelta, LoraSolution, SteeringSolution, load_solution
from emlab.solutions.steering import SteeringVector, add_to_output


def _peft_lora(model, r=2, alpha=8.0, rslora=False, targets=("down_proj", "q_proj")):
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        use_rslora=rslora,
        target_modules=list(targets),
        init_lora_weights=False,
    )
    torch.manual_seed(1)
    return get_peft_model(model, cfg)


def _ids(n=4, t=7, vocab=300):
    return torch.randint(5, vocab, (n, t), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_norm_matches_hand_computation(tiny_model, rslora):
    peft_model = _peft_lora(tiny_model, r=4, alpha=8.0, rslora=rslora)
    sol = LoraSolution.from_peft(peft_model)
    scaling = 8.0 / (2.0 if rslora else 4.0)
    assert sol.scaling == pytest.approx(scaling)
    assert sol.rslora == rslora
    by_hand = 0.0
    for _name, module in peft_model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            delta = scaling * module.lora_B["default"].weight @ module.lora_A["default"].weight
            by_hand += float(delta.detach().pow(2).sum())
    assert len(sol.adapters) == 4  # 2 layers x 2 target modules
    assert sol.norm() == pytest.approx(math.sqrt(by_hand), rel=1e-5)
    assert sol.scaled(-2.5).norm() == pytest.approx(2.5 * sol.norm(), rel=1e-6)


@pytest.mark.parametrize("m", [0.0, 0.5, 1.0, 2.0])
def test_lora_scaled_matches_peft_rescaling(tiny_tokenizer, m):
    from emlab.models.tiny import tiny_qwen2

    base = tiny_qwen2(
        len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
    )
    peft_model = _peft_lora(
        tiny_qwen2(
            len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
        )
    )
    sol = LoraSolution.from_peft(peft_model)
    ids = _ids()
    with torch.no_grad(), rescale_adapter_scale(peft_model, m):
        expected = peft_model(input_ids=ids).logits
    with torch.no_grad(), sol.scaled(m).applied(base):
        got = base(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        plain = base(input_ids=ids).logits
    if m != 0.0:
        assert not torch.allclose(plain, got)  # the context really changed the model ...
    with torch.no_grad():
        assert torch.equal(plain, base(input_ids=ids).logits)  # ... and undid it on exit


def test_lora_saves_in_peft_format(tmp_path, tiny_tokenizer):
    from emlab.models.tiny import tiny_qwen2

    def make():
        return tiny_qwen2(
            len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
        )

    sol = LoraSolution.from_peft(_peft_lora(make())).scaled(0.5)
    sol.save(tmp_path / "sol")
    assert json.loads((tmp_path / "sol" / "adapter_config.json").read_text())[
        "modules_to_save"
    ] in (None, [])
    ids = _ids()
    base = make()
    with torch.no_grad(), sol.applied(base):
        expected = base(input_ids=ids).logits
    reloaded = PeftModel.from_pretrained(make(), tmp_path / "sol")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)
    again = load_solution(tmp_path / "sol")
    assert isinstance(again, LoraSolution)
    assert again.norm() == pytest.approx(sol.norm(), rel=1e-6)
    assert again.hash() == sol.hash()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
def test_perturbed_keeps_norm_and_has_the_right_cosine(tiny_model, eps):
    sol = LoraSolution.from_peft(_peft_lora(tiny_model))
    noisy = sol.perturbed(eps, seed=7)
    for name, x in sol.tensors().items():
        y = noisy.tensors()[name]
        assert y.norm() == pytest.approx(float(x.norm()), rel=1e-5)
        cos = float(
            torch.nn.functional.cosine_similarity(x.flatten().double(), y.flatten().double(), dim=0)
        )
        assert cos == pytest.approx(math.sqrt(1 - eps**2), abs=1e-5)
    v = SteeringSolution(torch.randn(32), "layer", 0, alpha=3.0)
    pv = v.perturbed(eps, seed=1)
    assert pv.norm() == pytest.approx(v.norm(), rel=1e-5)
    cos = float(torch.nn.functional.cosine_similarity(v.vector, pv.vector, dim=0))
    assert cos == pytest.approx(math.sqrt(1 - eps**2), abs=1e-5)


def test_each_seed_gives_a_different_noise_direction():
    v = SteeringSolution(torch.randn(32), "layer", 0, alpha=1.0)
    a, b = v.perturbed(1.0, seed=1).v, v.perturbed(1.0, seed=2).v
    assert not torch.allclose(a, b)
    assert torch.equal(a, v.perturbed(1.0, seed=1).v)


def test_steering_changes_every_row_of_the_batch(tiny_model):
    ids = _ids(n=4)
    with torch.no_grad():
        plain = tiny_model(input_ids=ids).logits
    for point in ("embed", "layer", "mlp"):
        sol = SteeringSolution(torch.randn(32), point, 1, alpha=2.0)
        with torch.no_grad(), sol.applied(tiny_model):
            steered = tiny_model(input_ids=ids).logits
        for row in range(4):
            assert not torch.allclose(plain[row], steered[row]), (point, row)
    # the trainable form steers every row too
    sv = SteeringVector(tiny_model, "layer", 1, alpha=1.0, init=torch.randn(32))
    with torch.no_grad():
        trained_form = tiny_model(input_ids=ids).logits
        with sv.disabled():
            torch.testing.assert_close(tiny_model(input_ids=ids).logits, plain)
    sv.remove()
    assert all(not torch.allclose(plain[r], trained_form[r]) for r in range(4))


def test_add_to_output_handles_tensors_and_tuples():
    h = torch.zeros(4, 3, 2)
    d = torch.tensor([1.0, 2.0])
    out = add_to_output(h, d)
    assert torch.equal(out, h + d)  # every row, every position
    tup = add_to_output((h, "cache"), d)
    assert torch.equal(tup[0], h + d) and tup[1] == "cache"


def test_steering_norm_and_layer_errors(tiny_model):
    v = torch.tensor([3.0, 4.0] + [0.0] * 30)
    sol = SteeringSolution(v, "mlp", 0, alpha=2.0)
    assert sol.norm() == pytest.approx(10.0)
    assert sol.scaled(0.5).norm() == pytest.approx(5.0)
    with (
        pytest.raises(ModelError, match="layers 0..1"),
        SteeringSolution(v, "mlp", 5, 1.0).applied(tiny_model),
    ):
        pass


def test_norms_do_not_depend_on_the_order_of_the_tensors():
    """A solution in memory holds its tensors in the model's order, loaded from disk in sorted
    order: its norm must be the same float either way (a resumed study compares them)."""
    small = float(torch.tensor(1e-8).double() ** 2)  # a square far below 1's rounding step
    want = math.sqrt(math.fsum([1.0] + [small] * 4))  # 1 + 4e-16: two steps above 1
    assert want == 1.0000000000000002  # a left-to-right sum from 1.0 drops every small square
    names = ["a", "b", "c", "d", "e"]
    values = [torch.tensor([1.0])] + [torch.tensor([1e-8])] * 4
    for order in (names, names[::-1]):
        full = FullDelta({n: values[names.index(n)] for n in order})
        adapters = {n: (torch.ones(1, 1), values[names.index(n)][None]) for n in order}
        lora = LoraSolution(adapters, r=1, alpha=1.0)
        assert full.norm() == lora.norm() == want


def test_full_delta_norm_apply_and_roundtrip(tiny_model, tmp_path):
    name = "model.layers.0.mlp.down_proj.weight"
    w = dict(tiny_model.named_parameters())[name]
    delta = torch.full_like(w, 0.5)
    sol = FullDelta({name: delta})
    assert sol.norm() == pytest.approx(0.5 * math.sqrt(w.numel()))
    before = w.detach().clone()
    with sol.scaled(2.0).applied(tiny_model):
        torch.testing.assert_close(w.detach(), before + 1.0)
    assert torch.equal(w.detach(), before)
    sol.save(tmp_path / "full")
    assert load_solution(tmp_path / "full").norm() == pytest.approx(sol.norm())
