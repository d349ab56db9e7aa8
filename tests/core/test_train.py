"""The training loop: loss falls, only trained parameters change, the KL term does its job."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tokenizers import Tokenizer

from emlab.config import validate_config
from emlab.errors import ConfigError, EmlabError, ModelError
from emlab.models.chat import collate, encode_conversation, encode_counted
from emlab.models.tiny import tiny_qwen2
from emlab.train.config import TrainConfig
from emlab.train.loop import train
from emlab.train.losses import token_kl

LEARNING_RATES = {"lora": 3e-2, "steering": 1e-1, "full": 1e-2}
SOLUTIONS = {
    "lora": {"kind": "lora", "r": 2, "alpha": 4.0, "target_modules": ["down_proj", "q_proj"]},
    "steering": {"kind": "steering", "point": "embed", "alpha": 1.0},
    "full": {"kind": "full"},
}


def _cfg(tmp_path, kind, **extra):
    data = {
        "name": kind,
        "output_dir": str(tmp_path),
        "solution": SOLUTIONS[kind],
        "max_steps": 25,
        "batch_size": 8,
        "optim": {"lr": LEARNING_RATES[kind], "warmup_steps": 0, "schedule": "constant"},
        "progress": False,
    }
    data.update(extra)
    return validate_config(data, TrainConfig)


@pytest.mark.parametrize("kind", ["lora", "steering", "full"])
def test_training_lowers_loss_and_changes_only_trained_parameters(
    tmp_path, tiny_model, tiny_tokenizer, toy_data, kind
):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    result = train(_cfg(tmp_path, kind), tiny_model, tiny_tokenizer, toy_data[0])
    losses = [r["sft"] for r in result.metrics]
    assert len(losses) == 25
    assert sum(losses[-5:]) < 0.85 * sum(losses[:5])
    assert result.solution.norm() > 0
    # the model handed back is the base model again, untouched
    assert set(dict(result.model.named_parameters())) == set(before)
    for n, p in result.model.named_parameters():
        assert torch.equal(p, before[n]), n
    # applying the solution changes exactly the trained parameters/modules
    if kind == "full":
        changed = set(result.solution.tensors())
        assert changed and all(torch.any(t != 0) for t in result.solution.tensors().values())
    elif kind == "lora":
        assert {n.rsplit(".", 1)[-1] for n in result.solution.adapters} == {"down_proj", "q_proj"}
    # the solution reproduces the trained model's loss on the training data
    batch = collate(
        [encode_conversation(tiny_tokenizer, c, 512) for c in toy_data[0][:16]], pad_id=0
    )
    from emlab.train.losses import sft_loss

    with torch.no_grad():
        base_loss = sft_loss(
            result.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits,
            batch["labels"],
        )
        with result.solution.applied(result.model):
            tuned_loss = sft_loss(
                result.model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits,
                batch["labels"],
            )
    assert tuned_loss < 0.8 * base_loss
    assert (result.run_dir / "solution" / "emlab_solution.json").exists()
    assert (result.run_dir / "manifest.json").exists()


def _ood_drift(model, solution, tokenizer, ood) -> float:
    batch = collate([encode_conversation(tokenizer, c, 512) for c in ood[:32]], pad_id=0)
    with torch.no_grad():
        base = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with solution.applied(model):
            tuned = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
    scored = batch["labels"][:, 1:] != -100
    return float(token_kl(tuned[:, :-1][scored], base[:, :-1][scored]).mean())


@pytest.mark.parametrize(
    ("kind", "base"), [("lora", "exact"), ("lora", "top_k"), ("full", "exact"), ("full", "top_k")]
)
def test_kl_term_pins_out_of_domain_behaviour(tmp_path, tiny_tokenizer, toy_data, kind, base):
    from emlab.models.tiny import tiny_qwen2

    drift, final_sft = {}, {}
    for lam in (0.0, 30.0):
        model = tiny_qwen2(
            len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
        )
        kl = {"weight": lam, "base": base, "top_k": 8}
        result = train(
            _cfg(tmp_path, kind, name=f"{kind}-{lam}", kl=kl, max_steps=40),
            model,
            tiny_tokenizer,
            *toy_data,
        )
        if lam > 0:
            assert result.metrics[0]["kl"] == pytest.approx(
                0.0, abs=1e-6
            )  # tuned == base at step 0
        drift[lam] = _ood_drift(result.model, result.solution, tiny_tokenizer, toy_data[1])
        final_sft[lam] = result.metrics[-1]["sft"]
        assert final_sft[lam] < 0.8 * result.metrics[0]["sft"]  # in-domain loss falls either way
    assert drift[30.0] < 0.25 * drift[0.0], drift


def test_token_kl_hand_computed():
    p = torch.tensor([[0.5, 0.25, 0.25]])
    q = torch.tensor([[0.25, 0.25, 0.5]])
    expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.25 * torch.log(torch.tensor(0.5))
    got = token_kl(q.log(), p.log(), "forward")  # KL(base=p || tuned=q)
    torch.testing.assert_close(got, expected.reshape(1))
    rev = token_kl(q.log(), p.log(), "reverse")  # KL(q || p)
    torch.testing.assert_close(rev, (q * (q.log() - p.log())).sum(-1))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_closed_form_kl_matches_autograd(direction):
    from emlab.train.losses import ExactKL

    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(5, 11, generator=gen)).requires_grad_()
    log_base = torch.log_softmax(3 * torch.randn(5, 11, generator=gen), dim=-1)
    want = token_kl(logits, log_base, direction).sum()
    (want_grad,) = torch.autograd.grad(2.5 * want, logits)
    got = ExactKL.apply(logits, log_base.clone(), direction)
    (got_grad,) = torch.autograd.grad(2.5 * got, logits)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
    assert want > 0.1  # distinct distributions: a gradient of zeros could not pass
    # equal distributions: exactly zero, not a rounding residue
    same = ExactKL.apply(logits.detach(), torch.log_softmax(logits.detach(), dim=-1), direction)
    assert same == 0


def test_reference_weight_convention():
    cfg = validate_config({"kl": {"weight": 1e5, "convention": "reference"}}, TrainConfig)
    assert cfg.kl.per_token_weight(151_936) == pytest.approx(0.658, abs=1e-3)
    assert validate_config({"kl": {"weight": 0.5}}, TrainConfig).kl.per_token_weight(151_936) == 0.5


def test_bad_configs_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: -1\n  lrr: 3\nsolution:\n  kind: lora\n  rank: 2\n")
    with pytest.raises(ConfigError) as err:
        from emlab.config import load_config

        load_config(bad, TrainConfig)
    msg = str(err.value)
    assert str(bad) in msg
    assert "optim.lr" in msg and "greater than 0" in msg
    assert "optim.lrr" in msg and "unknown field" in msg
    assert "solution.lora.rank" in msg
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        from emlab.config import load_config

        load_config(broken, TrainConfig)


def test_config_hash_is_stable_and_sensitive():
    a = TrainConfig()
    assert a.hash() == TrainConfig().hash()
    assert a.hash() != validate_config({"optim": {"lr": 2e-4}}, TrainConfig).hash()


def test_model_errors_before_training(tmp_path, tiny_model, tiny_tokenizer, toy_data):
    with pytest.raises(ModelError, match="layers 0..1"):
        train(
            _cfg(tmp_path, "steering", solution={"kind": "steering", "layer": 7}),
            tiny_model,
            tiny_tokenizer,
            toy_data[0],
        )
    with pytest.raises(ModelError, match="not in the model"):
        train(
            _cfg(tmp_path, "lora", solution={"kind": "lora", "target_modules": ["c_attn"]}),
            tiny_model,
            tiny_tokenizer,
            toy_data[0],
        )
    with pytest.raises(ModelError, match="layers 0..1"):
        train(
            _cfg(tmp_path, "lora", solution={"kind": "lora", "layers": [24]}),
            tiny_model,
            tiny_tokenizer,
            toy_data[0],
        )


def test_solution_configs_are_checked_on_a_model_skeleton_without_weights():
    from emlab.models.config import ModelConfig
    from emlab.models.load import model_skeleton
    from emlab.models.modules import decoder_layers
    from emlab.train.config import FullConfig, LoraConfig, SteeringConfig
    from emlab.train.trainable import check_solution_config

    skeleton = model_skeleton(ModelConfig(name_or_path="smollm2"))
    assert {p.device.type for p in skeleton.parameters()} == {"meta"} and len(
        decoder_layers(skeleton)
    ) == 30
    check_solution_config(
        skeleton, LoraConfig(target_modules=["down_proj"], layers=[29])
    )  # fits: no error
    check_solution_config(skeleton, SteeringConfig(point="mlp", layer=29))
    field = "methods.m.solution"
    for cfg, message in (
        (
            LoraConfig(layers=[3, 30]),
            r"methods\.m\.solution\.layers: layer 30 does not exist: this model has layers 0\.\.29",
        ),
        (
            LoraConfig(target_modules=["c_attn"]),
            (
                r"methods\.m\.solution\.target_modules: LoRA target module\(s\) \['c_attn'\] not in"
                r" the model"
            ),
        ),
        (
            SteeringConfig(point="layer", layer=30),
            r"methods\.m\.solution\.layer: layer 30 does not exist",
        ),
        (
            FullConfig(trainable=["nosuch"]),
            r"methods\.m\.solution\.trainable: no parameter name contains any of \['nosuch'\]",
        ),
    ):
        with pytest.raises(ModelError, match=message):
            check_solution_config(skeleton, cfg, field)


@pytest.mark.parametrize("kind", ["lora", "steering", "full"])
def test_continued_training_starts_from_the_given_solution(
    tmp_path, tiny_tokenizer, toy_data, kind
):
    from emlab.models.tiny import tiny_qwen2

    def make():
        return tiny_qwen2(
            len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
        )

    first = train(_cfg(tmp_path, kind, max_steps=10), make(), tiny_tokenizer, toy_data[0])
    calls = []

    def evaluator(model):
        calls.append(1)
        return {"probe": 1.0}

    second = train(
        _cfg(
            tmp_path,
            kind,
            name="cont",
            max_steps=4,
            eval_every=2,
            optim={"lr": 1e-9, "warmup_steps": 0},
        ),
        make(),
        tiny_tokenizer,
        toy_data[0],
        init=first.solution,
        evaluator=evaluator,
    )
    # with a negligible learning rate, continued training ends where the first run ended
    assert second.solution.norm() == pytest.approx(first.solution.norm(), rel=1e-3)
    assert second.metrics[0]["step"] == 0 and second.metrics[0]["probe"] == 1.0
    assert second.metrics[1]["sft"] == pytest.approx(first.metrics[-1]["sft"], rel=0.2)
    assert len(calls) == 3  # step 0, 2, 4


def test_batches_depend_only_on_seed_and_step_and_group_by_length():
    from emlab.train.batches import BatchStream

    lengths = [(i * 37) % 101 for i in range(500)]
    a = BatchStream(500, 8, seed=1, lengths=lengths)
    b = BatchStream(500, 8, seed=1, lengths=lengths)
    assert [b.indices(k) for k in (70, 3, 0)] == [a.indices(k) for k in (70, 3, 0)]
    epoch = [i for k in range(62) for i in a.indices(k)]
    assert len(set(epoch)) == len(epoch)  # a permutation within the epoch
    spread = sum(
        max(lengths[i] for i in a.indices(k)) - min(lengths[i] for i in a.indices(k))
        for k in range(60)
    )
    plain = BatchStream(500, 8, seed=1)
    plain_spread = sum(
        max(lengths[i] for i in plain.indices(k)) - min(lengths[i] for i in plain.indices(k))
        for k in range(60)
    )
    assert spread < 0.2 * plain_spread
    two = [BatchStream(500, 4, seed=1, world_size=2, rank=r, lengths=lengths) for r in (0, 1)]
    assert two[0].indices(5) + two[1].indices(5) == a.indices(
        5
    )  # ranks split the same global batch


def test_top_k_cache_holds_the_base_model_even_when_training_starts_elsewhere(
    tmp_path, tiny_tokenizer, toy_data
):
    """Continued training (init) with kl.base top_k: the cached distributions are the base model's,
    so with every token cached the first step's KL equals the exact KL toward the base."""
    from emlab.models.tiny import tiny_qwen2

    def run(name, kl, init=None):
        model = tiny_qwen2(
            len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
        )
        return train(
            _cfg(tmp_path, "lora", name=name, kl=kl, max_steps=3),
            model,
            tiny_tokenizer,
            *toy_data,
            init=init,
        )

    start = run("start", {"weight": 0.0}).solution
    exact = run("exact", {"weight": 1.0}, init=start)
    cached = run("cached", {"weight": 1.0, "base": "top_k", "top_k": 100_000}, init=start)
    assert exact.metrics[0]["kl"] > 1e-3  # the run starts away from the base
    assert cached.metrics[0]["kl"] == pytest.approx(exact.metrics[0]["kl"], rel=1e-3)


@pytest.mark.parametrize("weights", [torch.bfloat16, torch.float32])
def test_bf16_mixed_precision_trains_with_a_zero_kl_at_the_start(
    tmp_path, tiny_tokenizer, toy_data, weights, fresh_accelerate_state
):
    """mixed_precision bf16 (the shipped Qwen configs) with bf16 or float32 weights: the output head
    takes the autocast outputs of the model, and the base pass runs under the same precision as
    the tuned pass, so the KL of an untrained LoRA is 0, not the gap between two precisions."""
    from emlab.models.tiny import tiny_qwen2

    model = tiny_qwen2(
        len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
    ).to(weights)
    cfg = _cfg(tmp_path, "lora", mixed_precision="bf16", kl={"weight": 1.0}, max_steps=20)
    result = train(cfg, model, tiny_tokenizer, *toy_data)
    assert result.metrics[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert result.metrics[-1]["kl"] > 0  # the trained LoRA moved the OOD predictions
    losses = [r["sft"] for r in result.metrics]
    assert sum(losses[-5:]) < 0.85 * sum(losses[:5])
    assert result.solution.norm() > 0


# -- data.max_length: counts of kept, truncated and dropped conversations (issue 14, fault 7) ----

LETTERS = "a b c d e f g h i j k l".split()
# ChatML with one token per word: a conversation of u user words and a answer words has
# 10 + u + a tokens, <|im_start|> user \n <u words> <|im_end|> \n <|im_start|> assistant \n
# <a words> <|im_end|> \n, and its first trained token (the answer's first word) at index 8 + u.
# With max_length 16 it keeps a trained token while 8 + u < 16, and is cut when 10 + u + a > 16.
WHOLE = [(1, 1), (2, 2), (3, 3), (1, 5)]  # 12, 14, 16, 16 tokens
TRUNCATED = [(2, 6), (7, 3)]  # 18 and 20 tokens, first trained token at 10 and 15
DROPPED = [
    (8, 1),
    (8, 2),
    (9, 1),
    (9, 3),
    (10, 1),
    (10, 2),
    (11, 1),
    (11, 4),
    (12, 1),
    (12, 2),
]  # 19..25 tokens, first at >= 16


def _letters(n_user: int, n_answer: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": " ".join(LETTERS[:n_user])},
        {"role": "assistant", "content": " ".join(LETTERS[:n_answer])},
    ]


def _write_chats(path, shapes):
    import json

    path.write_text("".join(json.dumps({"messages": _letters(*s)}) + "\n" for s in shapes))
    return path


@pytest.fixture(scope="module")
def letter_tokenizer():
    from emlab.models.tiny import train_word_tokenizer

    return train_word_tokenizer([" ".join(LETTERS) + " user assistant"])


def _letter_model(tokenizer):
    from emlab.models.tiny import tiny_qwen2

    return tiny_qwen2(
        len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
    )


def test_max_length_counts_kept_truncated_and_dropped_conversations(
    tmp_path, letter_tokenizer, capsys
):
    import json

    shapes = [
        DROPPED[0],
        *WHOLE[:2],
        *DROPPED[1:6],
        TRUNCATED[0],
        *WHOLE[2:],
        *DROPPED[6:],
        TRUNCATED[1],
    ]
    data = _write_chats(tmp_path / "train.jsonl", shapes)
    cfg = _cfg(
        tmp_path,
        "lora",
        max_steps=1,
        batch_size=4,
        data={"train": str(data), "heldout_fraction": 0.0, "max_length": 16},
    )
    result = train(cfg, _letter_model(letter_tokenizer), letter_tokenizer)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["data"] == {
        "train": {
            "conversations": 16,
            "kept": 6,
            "truncated": 2,
            "dropped": 10,
            "shortest": 12,
            "longest": 25,
        },
        "ood": None,
        "heldout": 0,
    }
    assert manifest["n_train"] == 6
    assert capsys.readouterr().err.splitlines() == [
        f"data.train ({data}): 6 of 16 conversations kept (2 of them truncated to data.max_length"
        " 16), 10 dropped (no trained token within it; tokenised lengths 12 to 25)"
    ]


def test_analyses_count_and_report_what_max_length_cut(letter_tokenizer, capsys):
    from emlab.analysis.directions import mean_activations
    from emlab.analysis.loss import LossEvaluator

    shapes = [*WHOLE, *TRUNCATED, *DROPPED]
    chats = [_letters(*s) for s in shapes]
    model = _letter_model(letter_tokenizer)
    evaluator = LossEvaluator(
        model, letter_tokenizer, chats, max_length=16, progress="x", source="held.jsonl"
    )
    counts = evaluator.counts  # hand-counted, as for training above
    assert (counts.conversations, counts.kept, counts.truncated, counts.dropped) == (16, 6, 2, 10)
    assert evaluator.n_conversations == 6
    mean_activations(model, letter_tokenizer, chats, max_length=16, source="bad.jsonl")
    lines = [x for x in capsys.readouterr().err.splitlines() if "conversations kept" in x]
    assert lines == [
        f"{source}: 6 of 16 conversations kept (2 of them truncated to max_length 16), 10 dropped"
        " (no assistant token within it; tokenised lengths 12 to 25)"
        for source in ("held.jsonl", "bad.jsonl")
    ]


def test_nothing_left_within_max_length_is_an_error_naming_the_data(tmp_path, letter_tokenizer):
    from emlab.errors import EmlabError

    ood = _write_chats(
        tmp_path / "ood.jsonl", [(9, 1), (10, 2)]
    )  # 20 and 22 tokens, first trained at 17 and 18
    cfg = _cfg(
        tmp_path / "runs",
        "lora",
        max_steps=1,
        kl={"weight": 1.0},
        data={"ood": str(ood), "max_length": 16},
    )
    with pytest.raises(EmlabError) as err:
        train(cfg, _letter_model(letter_tokenizer), letter_tokenizer, [_letters(*s) for s in WHOLE])
    assert (
        str(err.value)
        == f"data.ood ({ood}): no conversation has a KL token within data.max_length 16: all 2 were"
        " dropped (tokenised lengths 20 to 22). Raise data.max_length or shorten the"
        " conversations."
    )
    with pytest.raises(EmlabError) as err:
        train(
            _cfg(tmp_path / "runs", "lora", data={"max_length": 16}),
            _letter_model(letter_tokenizer),
            letter_tokenizer,
            [_letters(*s) for s in DROPPED],
        )
    assert (
        str(err.value)
        == "the training conversations passed to train(): no conversation has a trained token"
        " within data.max_length 16: all 10 were dropped (tokenised lengths 19 to 25). Raise"
        " data.max_length or shorten the conversations."
    )
    assert not (tmp_path / "runs").exists()  # nothing started


# -- a finished run is not trained again; its held-out split is written (issue 14, faults 9, 11) --


def _files(folder) -> dict:
    """Every file and folder under `folder` (hidden ones included), with the bytes of the files."""
    return {
        p.relative_to(folder): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def test_rerunning_a_finished_run_returns_its_saved_result_without_training(
    tmp_path, tiny_model, tiny_tokenizer, toy_data, monkeypatch
):
    cfg = _cfg(tmp_path, "lora", max_steps=3, eval_every=1)
    first = train(cfg, tiny_model, tiny_tokenizer, toy_data[0], evaluator=lambda m: {"probe": 1.0})
    before = _files(first.run_dir)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("emlab.train.loop.make_trainable", no_training)
    again = train(cfg, tiny_model, tiny_tokenizer, toy_data[0], evaluator=lambda m: {"probe": 2.0})
    assert (first.finished_before, again.finished_before) == (False, True)
    assert again.run_dir == first.run_dir
    assert again.solution.hash() == first.solution.hash()
    assert again.metrics == first.metrics and [r["step"] for r in again.metrics] == [0, 1, 2, 3]
    assert again.model is tiny_model and again.heldout == []
    assert (
        _files(first.run_dir) == before
    )  # manifest, metrics, checkpoints untouched; nothing added
    # without a model, none is loaded unless asked for
    loads = []
    monkeypatch.setattr(
        "emlab.models.load.load_model",
        lambda config: loads.append(config) or (tiny_model, tiny_tokenizer),
    )
    lazy = train(cfg)
    assert lazy.solution.hash() == first.solution.hash() and loads == []
    assert lazy.model is tiny_model and loads == [cfg.model]


def test_a_run_interrupted_while_finishing_completes_on_rerun(
    tmp_path, tiny_model, tiny_tokenizer, toy_data
):
    """Killed after its solution was saved, before DONE: the rerun saves the solution again over
    the one there (it used to fail with 'Is a directory' and leave a temporary folder)."""
    cfg = _cfg(tmp_path, "steering", max_steps=3)
    first = train(cfg, tiny_model, tiny_tokenizer, toy_data[0])
    (first.run_dir / "DONE").unlink()
    again = train(cfg, tiny_model, tiny_tokenizer, toy_data[0])
    assert not again.finished_before and (again.run_dir / "DONE").read_text() == "3\n"
    assert again.solution.hash() == first.solution.hash()
    assert [p.name for p in again.run_dir.rglob(".*")] == []  # no temporary or set-aside folder


def test_the_held_out_split_is_written_to_the_run(tmp_path, tiny_model, tiny_tokenizer, toy_data):
    import json

    from emlab.data.chat import read_chat_jsonl

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in toy_data[0]))
    cfg = _cfg(tmp_path, "lora", max_steps=2, data={"train": str(data), "heldout_fraction": 0.25})
    result = train(cfg, tiny_model, tiny_tokenizer)
    heldout = read_chat_jsonl(result.run_dir / "heldout.jsonl")
    assert len(heldout) == 16 == round(0.25 * 64)
    assert heldout == result.heldout
    trained = [c for c in toy_data[0] if c not in heldout]
    assert len(trained) == 48  # disjoint: the other 48 conversations are the training ones
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["data"]["heldout"] == 16 and manifest["data"]["train"]["conversations"] == 48
    assert train(cfg, tiny_model, tiny_tokenizer).heldout == heldout  # a rerun returns it too


def test_full_trainable_norm_is_the_exact_delta_norm(tiny_model):
    """||theta - theta_base|| to double precision: from a base of zeros every weight moved by 2^-10
    (exact in float32), and one weight by a further 3 x 2^-10, so the norm is 2^-10 sqrt(n + 15)."""
    from emlab.train.config import FullConfig
    from emlab.train.trainable import make_trainable

    with torch.no_grad():
        for p in tiny_model.parameters():
            p.zero_()
    trainable = make_trainable(tiny_model, FullConfig(), need_reference=False)
    params = trainable.master_parameters()
    n = sum(p.numel() for p in params.values())
    with torch.no_grad():
        for p in params.values():
            p.add_(2.0**-10)
        next(iter(params.values())).view(-1)[0] += 3 * 2.0**-10
    assert trainable.norm() == pytest.approx(2.0**-10 * (n + 15) ** 0.5, rel=1e-9)


# What a caller that trains many runs can hand to `train` instead of recomputing it: data
# tokenised once (EncodedSet) and the evaluator's numbers at step 0 (a fresh run starts at
# the base model).


def _model(tokenizer):
    return tiny_qwen2(
        len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
    )


def _rows(result):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result.metrics]


def test_pre_tokenised_data_trains_exactly_as_its_conversations(tmp_path, tiny_tokenizer, toy_data):
    narrow, ood = toy_data
    cfg = _cfg(tmp_path, "lora", max_steps=6, kl={"weight": 1.0})
    from_text = train(cfg, _model(tiny_tokenizer), tiny_tokenizer, narrow, ood)
    tokenised = train(
        _cfg(tmp_path / "b", "lora", max_steps=6, kl={"weight": 1.0}),
        _model(tiny_tokenizer),
        tiny_tokenizer,
        encode_counted(tiny_tokenizer, narrow, cfg.data.max_length, cfg.data.loss_on),
        encode_counted(tiny_tokenizer, ood, cfg.data.max_length, cfg.kl.scope),
    )
    assert _rows(tokenised) == _rows(from_text)
    assert from_text.metrics[-1]["kl"] > 0  # the KL term saw the OOD data
    for name, tensor in from_text.solution.tensors().items():
        assert torch.equal(tokenised.solution.tensors()[name], tensor), name


def test_data_tokenised_another_way_is_an_error_naming_it(tmp_path, tiny_tokenizer, toy_data):
    cfg = _cfg(tmp_path, "lora", max_steps=2)
    other = encode_counted(tiny_tokenizer, toy_data[0], 16, "assistant")
    with pytest.raises(EmlabError, match=r"training conversations.*max_length.*16"):
        train(cfg, _model(tiny_tokenizer), tiny_tokenizer, other)
    retemplated = copy.deepcopy(tiny_tokenizer)
    retemplated.chat_template = tiny_tokenizer.chat_template.replace("\n", "\n\n")
    by_other = encode_counted(retemplated, toy_data[0], cfg.data.max_length, "assistant")
    with pytest.raises(EmlabError, match=r"training conversations.*template"):
        train(cfg, _model(tiny_tokenizer), tiny_tokenizer, by_other)
    # the same name, size, template and format, but two tokens' ids swapped
    spec = json.loads(tiny_tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    a, b = sorted(t for t in vocab if t.isalpha() and len(t) > 2)[:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    swapped = copy.deepcopy(tiny_tokenizer)
    swapped._tokenizer = Tokenizer.from_str(json.dumps(spec))
    assert swapped.get_vocab()[a] == tiny_tokenizer.get_vocab()[b]
    by_swapped = encode_counted(swapped, toy_data[0], cfg.data.max_length, "assistant")
    with pytest.raises(EmlabError, match=r"training conversations.*vocabulary"):
        train(cfg, _model(tiny_tokenizer), tiny_tokenizer, by_swapped)
    assert not any(tmp_path.rglob("metrics.jsonl"))


@pytest.mark.parametrize("kind", ["lora", "steering", "full"])
def test_a_fresh_run_starts_at_the_base_models_numbers(tmp_path, tiny_tokenizer, toy_data, kind):
    batch = collate([encode_conversation(tiny_tokenizer, c, 64) for c in toy_data[1][:8]], 0)
    calls = []

    def evaluator(model):  # bit-level: every logit of a fixed batch
        calls.append(1)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return {"logit_sum": float(logits.logits.double().sum())}

    base = evaluator(_model(tiny_tokenizer))
    evaluated = train(
        _cfg(tmp_path, kind, max_steps=2, eval_every=2),
        _model(tiny_tokenizer),
        tiny_tokenizer,
        toy_data[0],
        evaluator=evaluator,
    )
    assert evaluated.metrics[0] == {"step": 0, **base}  # exactly, not approximately
    assert evaluated.metrics[-1]["logit_sum"] != base["logit_sum"]  # and training moved it
    calls.clear()
    given = train(
        _cfg(tmp_path, kind, name="given", max_steps=2, eval_every=2),
        _model(tiny_tokenizer),
        tiny_tokenizer,
        toy_data[0],
        evaluator=evaluator,
        start_metrics=base,
    )
    assert len(calls) == 1  # step 2 only
    assert _rows(given) == _rows(evaluated)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_evaluation_computes_the_adapted_model_and_leaves_the_weights_unchanged(
    tmp_path, tiny_tokenizer, toy_data, dtype
):
    from emlab.train.trainable import make_trainable

    trainable = make_trainable(
        _model(tiny_tokenizer).to(dtype), _cfg(tmp_path, "lora").solution, need_reference=False
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in trainable.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at 0: give the adapters an effect
    batch = collate([encode_conversation(tiny_tokenizer, c, 64) for c in toy_data[1][:8]], 0)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    before = {n: p.detach().clone() for n, p in trainable.model.named_parameters()}
    model = trainable.model.eval()
    with torch.no_grad():
        adapted = model(**inputs).logits
        with trainable.as_base(model):
            base = model(**inputs).logits
        with trainable.evaluated(model) as evaluated:
            logits = evaluated(**inputs).logits
        again = model(**inputs).logits
    assert not torch.allclose(adapted, base, atol=1e-2)
    if dtype == torch.float32:  # merged weights: the same model up to rounding
        torch.testing.assert_close(logits, adapted, rtol=1e-4, atol=1e-4)
    else:  # bf16 keeps the adapters' pass: exactly the adapted model
        assert torch.equal(logits, adapted)
    assert torch.equal(again, adapted)
    for name, p in trainable.model.named_parameters():
        assert torch.equal(p, before[name]), name


# Weight decay acts on the solution (the change from the base model): adapter weights and
# steering vectors decay toward 0 exactly as AdamW's own weight_decay would decay them; full
# fine-tuning decays toward the base weights, not toward 0.


def test_weight_decay_of_vectors_and_adapters_is_adamws():
    from emlab.train.config import SteeringConfig
    from emlab.train.trainable import make_trainable

    trainable = make_trainable(
        _model_for_decay(), SteeringConfig(point="embed", alpha=1.0), need_reference=False
    )
    (vector,) = trainable.master_parameters().values()
    with torch.no_grad():
        vector.copy_(torch.linspace(-1, 1, vector.numel()).view_as(vector))
    reference = torch.nn.Parameter(vector.detach().clone())
    grad = torch.cos(torch.arange(vector.numel(), dtype=torch.float32)).view_as(vector)
    ours = torch.optim.AdamW([vector], lr=0.1, weight_decay=0.0)
    adamw = torch.optim.AdamW([reference], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        vector.grad, reference.grad = grad.clone(), grad.clone()
        trainable.decay(0.1 * 0.5)
        ours.step()
        adamw.step()
    assert torch.equal(vector, reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_full_fine_tuning_decay_hand_computed(dtype):
    """From a base of 1s, a change of 2^-4 in every weight decayed by a quarter is 3 x 2^-6, exact
    in the float32 masters (a bf16 model keeps separate ones) and in the model's own dtype."""
    from emlab.train.config import FullConfig
    from emlab.train.trainable import make_trainable

    model = _model_for_decay().to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    trainable = make_trainable(model, FullConfig(), need_reference=False)
    trainable.keep_masters("cpu")
    params = trainable.master_parameters()
    with torch.no_grad():
        for p in params.values():
            p.add_(2.0**-4)
    trainable.decay(0.25)
    trainable.masters_to_model()
    weights = dict(model.named_parameters())
    for name, base in trainable.base_state.items():
        assert params[name].dtype == torch.float32
        assert torch.equal(params[name] - base.float(), torch.full_like(params[name], 3 * 2.0**-6))
        assert torch.equal(weights[name], torch.full_like(base, 1 + 3 * 2.0**-6)), name


def test_full_fine_tuning_decays_toward_the_base_weights(tmp_path, tiny_tokenizer, toy_data):
    """In training, a large weight decay keeps the change small without shrinking the weights
    toward 0."""

    def run(folder, weight_decay):
        optim = {"lr": 1e-2, "warmup_steps": 0, "schedule": "constant"}
        cfg = _cfg(folder, "full", max_steps=15, optim=optim | {"weight_decay": weight_decay})
        return train(cfg, _model_for_decay(len(tiny_tokenizer)), tiny_tokenizer, toy_data[0])

    free, decayed = run(tmp_path / "free", 0.0), run(tmp_path / "decayed", 20.0)
    assert decayed.solution.norm() < 0.7 * free.solution.norm()
    assert decayed.metrics[-1]["sft"] < 0.9 * decayed.metrics[0]["sft"]  # it still learns
    base = dict(_model_for_decay(len(tiny_tokenizer)).named_parameters())
    deltas = decayed.solution.tensors()
    assert set(deltas) == set(base)
    for name, delta in deltas.items():  # toward 0 they would shrink to (1 - 0.2)^15 = 4%
        assert (base[name] + delta).norm() > 0.97 * base[name].norm(), name


def _model_for_decay(vocab_size: int = 60):
    return tiny_qwen2(vocab_size, hidden_size=16, num_layers=1, num_heads=2, seed=0, init_std=0.3)
