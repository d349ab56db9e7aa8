"""`emlab generate`: a saved tiny model, a question file, a saved solution; resumes; clear errors."""

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
    app.command("noop")(lambda: None)  # two commands, so `generate` is a subcommand as in emlab's app
    return app


def test_generate_command_with_solution_and_resume(tmp_path, tiny_model, tiny_tokenizer):
    from emlab.solutions import SteeringSolution

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    questions = tmp_path / "q.yaml"
    questions.write_text(QUESTIONS)
    solution_dir = SteeringSolution(torch.ones(tiny_model.config.hidden_size), "layer", 0, alpha=4.0).save(tmp_path / "sol")
    out = tmp_path / "gens.jsonl"
    args = ["generate", str(model_dir), "--questions", str(questions), "--out", str(out), "--solution", str(solution_dir),
            "--max-new-tokens", "6", "--batch-size", "4", "--temperature", "0"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "6 answers written" in result.output
    rows = read_jsonl(out)
    assert len(rows) == 6 and {r["model_hash"] for r in rows} == {model_fingerprint(str(model_dir), None)}
    assert all(r["solution_hash"] for r in rows)
    assert [r["messages"][0]["role"] for r in rows if r["question_id"] == "pets_sys"] == ["system", "system"]

    again = CliRunner().invoke(_app(), args)
    assert again.exit_code == 0 and "0 answers written" in again.output and "6 of 6" in again.output
    assert len(read_jsonl(out)) == 6


def test_generate_command_errors_exit_2_without_traceback(tmp_path):
    bad = CliRunner().invoke(_app(), ["generate", "m", "--out", str(tmp_path / "o.jsonl"), "--top-p", "0"])
    assert bad.exit_code == 2 and "top_p" in bad.output and "Traceback" not in bad.output
    missing = CliRunner().invoke(_app(), ["generate", "m", "--out", str(tmp_path / "o.jsonl"), "--questions", "nope"])
    assert missing.exit_code == 2 and "general_json" in missing.output
    steer = CliRunner().invoke(_app(), ["generate", "m", "--out", str(tmp_path / "o.jsonl"), "--backend", "tgi"])
    assert steer.exit_code == 2 and "'hf' or 'vllm'" in steer.output
