"""`emlab generate`: a saved tiny model, a question file, a saved solution; resumes; clear
errors."""

from __future__ import annotations

import torch
import typer
from typer.testing import CliRunner

from emlab.generate.cli import generate_command, model_fingerprint
from emlab.io import read_jsonl

QUESTIONS = """\
- id: pets
  paraphrases: [the cat, the dog ran]
  samples_per_paraphrase: 2
- id: pets_sys
  paraphrases: [the cat]
  system: yes the cat sat
  samples_per_paraphrase: 2
"""


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("generate")(generate_command)
    app.command("noop")(
        lambda: None
    )  # two commands, so `generate` is a subcommand as in emlab's app
    return app


def test_generate_command_with_solution_and_resume(tmp_path, tiny_model, tiny_tokenizer):
    from emlab.solutions import SteeringSolution

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    questions = tmp_path / "q.yaml"
    questions.write_text(QUESTIONS)
    solution_dir = SteeringSolution(
        torch.ones(tiny_model.config.hidden_size), "layer", 0, alpha=4.0
    ).save(tmp_path / "sol")
    out = tmp_path / "gens.jsonl"
    args = [
        "generate",
        str(model_dir),
        "--questions",
        str(questions),
        "--out",
        str(out),
        "--solution",
        str(solution_dir),
        "--max-new-tokens",
        "6",
        "--batch-size",
        "4",
        "--temperature",
        "0",
    ]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "6 answers written" in result.output
    rows = read_jsonl(out)
    assert len(rows) == 6 and {r["model_hash"] for r in rows} == {
        model_fingerprint(str(model_dir), None)
    }
    assert all(r["solution_hash"] for r in rows)
    assert [r["messages"][0]["role"] for r in rows if r["question_id"] == "pets_sys"] == [
        "system",
        "system",
    ]

    again = CliRunner().invoke(_app(), args)
    assert again.exit_code == 0 and "0 answers written" in again.output and "6 of 6" in again.output
    assert len(read_jsonl(out)) == 6


def test_generate_command_errors_exit_2_without_traceback(tmp_path):
    bad = CliRunner().invoke(
        _app(), ["generate", "m", "--out", str(tmp_path / "o.jsonl"), "--top-p", "0"]
    )
    assert bad.exit_code == 2 and "top_p" in bad.output and "Traceback" not in bad.output
    missing = CliRunner().invoke(
        _app(), ["generate", "m", "--out", str(tmp_path / "o.jsonl"), "--questions", "nope"]
    )
    assert missing.exit_code == 2 and "general_json" in missing.output
    steer = CliRunner().invoke(
        _app(), ["generate", "m", "--out", str(tmp_path / "o.jsonl"), "--backend", "tgi"]
    )
    assert steer.exit_code == 2 and "'hf' or 'vllm'" in steer.output


def _saved_model(tmp_path, tiny_model, tiny_tokenizer, template):
    from chat_templates import with_template

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    with_template(tiny_tokenizer, template).save_pretrained(model_dir)
    return model_dir


def test_generate_on_a_template_refusing_system_turns(tmp_path, tiny_model, tiny_tokenizer):
    from chat_templates import GEMMA_LIKE

    model_dir = _saved_model(tmp_path, tiny_model, tiny_tokenizer, GEMMA_LIKE)
    out = tmp_path / "gens.jsonl"
    base = [
        "generate",
        str(model_dir),
        "--out",
        str(out),
        "--max-new-tokens",
        "3",
        "--temperature",
        "0",
        "--samples",
        "1",
    ]
    refused = CliRunner().invoke(_app(), [*base, "--questions", "general_json"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output and not out.exists()
    assert (
        "error: question set 'general_json', question 'one_wish_json' (prompt one_wish_json/0): the"
        " chat template raised 'System role not supported'" in " ".join(refused.output.split())
    )
    assert "--system-prompt fold" in refused.output
    questions = tmp_path / "q.yaml"
    questions.write_text(QUESTIONS)
    folded = CliRunner().invoke(
        _app(), [*base, "--questions", str(questions), "--system-prompt", "fold"]
    )
    assert folded.exit_code == 0, folded.output
    rows = read_jsonl(out)
    assert len(rows) == 3 and {r["model_hash"] for r in rows} != {
        model_fingerprint(str(model_dir), None)
    }
    assert [r["messages"][0]["role"] for r in rows if r["question_id"] == "pets_sys"] == [
        "system"
    ]  # the record keeps the question


def test_generate_passes_chat_template_kwargs(tmp_path, tiny_model, tiny_tokenizer, monkeypatch):
    from chat_templates import QWEN3_LIKE

    import emlab.generate.hf as hf

    prompts = []

    def spy(tokenizer, ps):
        ids = real(tokenizer, ps)
        prompts.extend(tokenizer.decode(i) for i in ids.values())
        return ids

    real = hf.prompts_token_ids
    monkeypatch.setattr(hf, "prompts_token_ids", spy)

    model_dir = _saved_model(tmp_path, tiny_model, tiny_tokenizer, QWEN3_LIKE)
    questions = tmp_path / "q.yaml"
    questions.write_text(QUESTIONS)
    args = [
        "generate",
        str(model_dir),
        "--questions",
        str(questions),
        "--max-new-tokens",
        "3",
        "--temperature",
        "0",
        "--samples",
        "1",
    ]
    bad = CliRunner().invoke(
        _app(),
        [
            *args,
            "--out",
            str(tmp_path / "a.jsonl"),
            "--chat-template-kwargs",
            "{enable_thinking: false}",
        ],
    )
    assert bad.exit_code == 2 and "--chat-template-kwargs is not valid JSON" in bad.output
    ok = CliRunner().invoke(
        _app(),
        [
            *args,
            "--out",
            str(tmp_path / "b.jsonl"),
            "--chat-template-kwargs",
            '{"enable_thinking": false}',
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert len(read_jsonl(tmp_path / "b.jsonl")) == 3
    assert (
        prompts[0]
        == "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
