"""Every `emlab ...` command in README.md runs as written: its command and every flag exist in
the CLI (typer/click introspection of emlab.cli.app), complete commands parse, the cheap ones
run on tiny inputs, and every command of `emlab --help` is in the README.

Commands are read from bash code blocks (joined over `\\` continuations, comments dropped; the
word after `emlab`, or after `python -m emlab` / `accelerate launch ... -m emlab`) and from
inline code. Placeholders: `{a,b}` stands for each alternative, `[X]` for an optional X, `...`
for elided arguments (the command is then only checked, not parsed); an upper-case word
(`CONFIG.yaml`, `MODEL`, `A.jsonl`) or `<name>` is a value the reader supplies (the command is
parsed, not run).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "judge"))
from fake_openai import FakeOpenAI  # noqa: E402

from emlab.cli import app  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
RUNNABLE = {"config-help", "judge", "score", "judge-agreement"}
"""Commands cheap enough to run here: on the workspace's tiny inputs (or none)."""
ROOT = typer.main.get_command(app)
"""The CLI as click objects (typer's own copy of click in recent typer: hence duck typing below)."""


@dataclass(frozen=True)
class Command:
    """One README command: its line, its text as written and the words after `emlab`."""

    line: int
    text: str
    args: tuple[str, ...]

    def where(self) -> str:
        return f"README.md:{self.line}: `{self.text}`"


def readme_commands(text: str) -> list[Command]:
    """The `emlab ...` commands of a README's shell code blocks and inline code."""
    lines = text.splitlines()
    commands: list[Command] = []
    block: str | None = None  # the language of the open code block
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        if line.lstrip().startswith("```"):
            block = line.strip().strip("`").strip() if block is None else None
        elif block in SHELL_BLOCKS:
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            words = shlex.split(line, comments=True)
            commands += [
                Command(number, line.strip(), tuple(words[k + 1 :]))
                for k, word in enumerate(words)
                if word == "emlab" and (k == 0 or words[k - 1] == "-m")
            ]
        elif block is None:
            commands += [
                Command(number, m.group(1), tuple(shlex.split(m.group(1))[1:]))
                for m in re.finditer(r"`(emlab(?: [^`]*)?)`", line)
            ]
        i += 1
    return commands


def expand(args: tuple[str, ...]) -> list[tuple[str, ...]]:
    """One argument list per alternative of each `{a,b}`; `[X]` becomes X."""
    for k, word in enumerate(args):
        if m := re.fullmatch(r"\{([^{}]+)\}", word):
            return [
                e
                for alt in m.group(1).split(",")
                for e in expand((*args[:k], alt.strip(), *args[k + 1 :]))
            ]
    return [tuple(w[1:-1] if re.fullmatch(r"\[[^\[\]=]+\]", w) else w for w in args)]


def is_group(node: object) -> bool:
    return hasattr(node, "commands")


def resolve(
    cmd: Command, args: tuple[str, ...]
) -> tuple[typer.core.TyperCommand, list[str], list[str]]:
    """(click command, its path of names, the remaining words) of `emlab <args>`; fails naming the
    README line."""
    node, path, rest = ROOT, [], list(args)
    while is_group(node) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        if name not in node.commands:
            pytest.fail(
                f"{cmd.where()}: `emlab {' '.join(path)}` has no command {name!r} (it has"
                f" {sorted(node.commands)})"
            )
        node, path = node.commands[name], [*path, name]
    if is_group(node):
        pytest.fail(
            f"{cmd.where()}: `emlab {' '.join(path)}` needs a command (one of"
            f" {sorted(node.commands)})"
        )
    return node, path, rest


def check_flags(
    cmd: Command, node: typer.core.TyperCommand, path: list[str], rest: list[str]
) -> None:
    """Every `--flag` of the command exists for that subcommand (a flag's value is skipped)."""
    options = {
        o: p
        for p in node.params
        if p.param_type_name == "option"
        for o in (*p.opts, *p.secondary_opts)
    }
    words = iter(rest)
    for word in words:
        if not word.startswith("-") or word in ("-", "..."):
            continue
        name = word.split("=", 1)[0]
        if name == "--help":
            continue
        if name not in options:
            known = sorted(o for o in options if o.startswith("--"))
            pytest.fail(
                f"{cmd.where()}: `emlab {' '.join(path)}` has no option {name} (its options:"
                f" {', '.join(known)}, --help)"
            )
        option = options[name]
        if "=" not in word and not option.is_flag and not option.count:
            next(words, None)


def is_placeholder(word: str) -> bool:
    """A value the reader supplies: an upper-case word (CONFIG.yaml, MODEL, A.jsonl) or one with
    <...>."""
    stem = word.split("=", 1)[-1].split("/")[-1].split(".")[0]
    return "<" in word or (len(stem) > 0 and stem.isupper())


def parse(cmd: Command, node: typer.core.TyperCommand, path: list[str], rest: list[str]) -> None:
    """click parses the command as a shell would pass it (required arguments, values, counts)."""
    try:
        node.make_context(" ".join(["emlab", *path]), list(rest))
    except Exception as e:  # click's Exit after --help, or a usage error
        if not hasattr(e, "format_message"):
            assert type(e).__name__ == "Exit", e
            return
        pytest.fail(f"{cmd.where()}: does not parse: {e.format_message()}")


def leaf_paths(node: typer.core.TyperCommand, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The name path of every command of the CLI (`('analyze', 'efficiency')`, ...)."""
    if is_group(node):
        return [p for name, sub in node.commands.items() for p in leaf_paths(sub, (*path, name))]
    return [path]


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 20 and any(c.args[:1] == ("score",) for c in COMMANDS)


class PromptScores(dict):
    """FakeOpenAI's table: any judge prompt gets a score 10-99 fixed by the prompt's hash (read by
    the fault hook)."""

    local = threading.local()

    def fault(self, n: int, name: str, body: dict) -> None:
        self.local.prompt = body["messages"][-1]["content"]

    def __missing__(self, name: str) -> list[tuple[str, float]]:
        return [
            (str(10 + int(hashlib.sha256(self.local.prompt.encode()).hexdigest(), 16) % 90), 0.0)
        ]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tokenizer):
    """A working directory with the repo's configs and tiny inputs under the README's file names:
    gens.jsonl (a tiny model's answers to the general questions), judge.yaml, judgments.jsonl
    (judged by a loopback judge that OPENAI_BASE_URL points at) and judgments_other_judge.jsonl."""
    from emlab.generate import SamplingConfig, generate_hf
    from emlab.judge.config import build_judge, load_judge_config
    from emlab.judge.runner import judge_generations, read_generations
    from emlab.models.tiny import tiny_qwen2
    from emlab.study.model.inputs import question_prompts

    root = tmp_path_factory.mktemp("readme")
    (root / "configs").symlink_to(REPO / "configs")
    shutil.copy(REPO / "configs" / "judge" / "gpt4o.yaml", root / "judge.yaml")
    model = tiny_qwen2(
        len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
    )
    generate_hf(
        model,
        tiny_tokenizer,
        question_prompts("general", 2),
        root / "gens.jsonl",
        SamplingConfig(max_new_tokens=8, batch_size=16),
        progress=False,
    )
    scores = PromptScores()
    with FakeOpenAI(scores, scores.fault) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_BASE_URL", server.url)
        mp.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
        mp.setenv("EMLAB_CACHE", str(root / "cache"))
        judge_generations(
            read_generations(root / "gens.jsonl"),
            build_judge(load_judge_config(root / "judge.yaml")),
            root / "judgments.jsonl",
        )
        rows = [json.loads(line) for line in (root / "judgments.jsonl").read_text().splitlines()]
        other = [
            {**r, "score": 100.0 - r["score"] if r["metric"] == "coherent" else r["score"]}
            for r in rows
        ]
        (root / "judgments_other_judge.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in other)
        )
        yield root


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: f"line{c.line}:{' '.join(c.args[:2])}")
def test_a_readme_command_runs_as_written(cmd: Command, workspace, monkeypatch):
    for args in expand(cmd.args):
        node, path, rest = resolve(cmd, args)
        check_flags(cmd, node, path, rest)
        for word in rest:
            if re.match(r"(configs|benchmarks|docs)/", word) and not re.search(r"[*<]", word):
                assert (REPO / word).exists(), f"{cmd.where()}: {word} is not in the repository"
        if not rest and path[0] != "config-help" or "..." in rest:
            # a mention of the command (`emlab train`) or elided arguments: nothing more to check
            continue
        parse(cmd, node, path, rest)
        if path[0] in RUNNABLE and not any(is_placeholder(w) for w in rest):
            monkeypatch.chdir(workspace)
            result = CliRunner().invoke(app, list(args))
            assert result.exit_code == 0, (
                f"{cmd.where()}: `emlab {' '.join(args)}` exited"
                f" {result.exit_code}:\n{result.output}"
            )


@pytest.mark.parametrize("path", leaf_paths(ROOT), ids=" ".join)
def test_every_command_has_help_and_is_in_the_readme(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, result.output
    documented = [resolve(c, args)[1] for c in COMMANDS for args in expand(c.args)]
    assert list(path) in documented, (
        f"`emlab {' '.join(path)}` (in `emlab --help`) is not in README.md"
    )


def test_a_wrong_flag_names_the_readme_line():
    """The checks fail on the bug this test guards against, naming the line."""
    wrong = readme_commands(
        "text\n\n```bash\nemlab score judgments.jsonl \\\n      --out results/   # EM rate\n```\n"
    )
    assert wrong == [
        Command(
            4,
            "emlab score judgments.jsonl  --out results/   # EM rate",
            ("score", "judgments.jsonl", "--out", "results/"),
        )
    ]
    node, path, rest = resolve(wrong[0], wrong[0].args)
    with pytest.raises(
        pytest.fail.Exception,
        match=r"README.md:4: .* `emlab score` has no option --out \(its options: .*--out-dir",
    ):
        check_flags(wrong[0], node, path, rest)
    inline = readme_commands("| `emlab analyze {efficiency,nosuch} ...` | x |\n")
    assert [expand(c.args) for c in inline] == [
        [("analyze", "efficiency", "..."), ("analyze", "nosuch", "...")]
    ]
    with pytest.raises(
        pytest.fail.Exception, match=r"README.md:1: .* `emlab analyze` has no command 'nosuch'"
    ):
        resolve(inline[0], expand(inline[0].args)[1])


def test_config_help_lists_and_accepts_the_same_kinds():
    from emlab.cli import _config_classes

    kinds = list(_config_classes())
    help_text = CliRunner().invoke(app, ["config-help", "--help"]).output
    assert all(kind in help_text for kind in kinds)
    result = CliRunner().invoke(app, ["config-help", "nosuch"])
    assert result.exit_code == 2, result.output
    assert (
        f"error: config-help 'nosuch': no such config; choose one of {', '.join(kinds)}."
        in result.stderr
    )
