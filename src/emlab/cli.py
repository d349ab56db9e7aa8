"""The `emlab` command line. Thin: parses arguments and calls library functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from emlab.analysis.cli import analyze_app
from emlab.clikit import fail
from emlab.errors import EmlabError
from emlab.generate.cli import generate_command
from emlab.judge.cli import judge_agreement_command, judge_command, score_command

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Emergent-misalignment lab: train, evaluate, analyse.",
)


@app.command()
def train(
    config: Annotated[
        Path,
        typer.Argument(help="Training config (YAML). `emlab config-help train` lists its fields."),
    ],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a field: --set optim.lr=1e-4 (YAML value).")
    ] = [],  # noqa: B006
) -> None:
    """Train a LoRA, steering vector or full fine-tune (SFT, optionally + KL). Resumes if
    interrupted; a finished run is not trained again."""
    import yaml

    from emlab.config import load_config
    from emlab.runs import DONE
    from emlab.train.config import TrainConfig
    from emlab.train.loop import train as run_train

    try:
        overrides = dict(_parse_override(s) for s in set_)
        cfg = load_config(config, TrainConfig, overrides=overrides)
        result = run_train(cfg)
    except (EmlabError, yaml.YAMLError) as e:
        fail(e)
    if result.finished_before:
        typer.echo(
            f"already trained: {result.run_dir} has its {DONE} marker; nothing was trained or"
            " written"
        )
    typer.echo(f"solution: {result.run_dir / 'solution'} (norm {result.solution.norm():.4g})")


@app.command()
def reproduce(
    config: Annotated[
        Path | None,
        typer.Argument(
            help=(
                "Study config (YAML); `kind: model` runs the real-model study. Default: the"
                " synthetic world's default study."
            )
        ),
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a field: --set seeds=[0,1] (YAML value).")
    ] = [],  # noqa: B006
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", help="No progress on stderr (bars and the line per finished stage)."
        ),
    ] = False,
) -> None:
    """Run the whole study (fine-tunes, evaluation, analyses, report) on the world or a real model.
    Resumes if interrupted."""
    from emlab.config import load_config

    try:
        overrides = dict(_parse_override(s) for s in set_)
        if _study_kind(config) == "model":
            from emlab.study.model.config import ModelStudyConfig
            from emlab.study.model.study import reproduce_model_study

            out = reproduce_model_study(
                load_config(config, ModelStudyConfig, overrides), source=str(config), quiet=quiet
            )
        else:
            from emlab.study.world.config import StudyConfig
            from emlab.study.world.reproduce import reproduce as run_study

            out = run_study(
                load_config(config, StudyConfig, overrides, merge_defaults=True), quiet=quiet
            )
    except EmlabError as e:
        fail(e)
    typer.echo(f"report: {out / 'report.md'}\nresults: {out / 'results.json'}")


def _study_kind(config: Path | None) -> str:
    """The `kind` a study YAML names ('world' when absent or unreadable: its loader reports the
    problem)."""
    import yaml

    if config is None or not config.is_file():
        return "world"
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return "world"
    return str(data.get("kind", "world")) if isinstance(data, dict) else "world"


app.command("generate")(generate_command)
app.command("judge")(judge_command)
app.command("score")(score_command)
app.command("judge-agreement")(judge_agreement_command)
app.add_typer(analyze_app, name="analyze")


@app.command("config-help")
def config_help(
    kind: Annotated[
        str, typer.Argument(help="train | world | study | model-study | judge | metrics")
    ] = "train",
) -> None:
    """List every config field with its type, default and meaning."""
    from emlab.config import describe_fields

    classes = _config_classes()
    if kind not in classes:
        fail(
            EmlabError(f"config-help {kind!r}: no such config; choose one of {', '.join(classes)}.")
        )
    typer.echo("\n".join(describe_fields(classes[kind])))


def _config_classes() -> dict:
    from emlab.judge.openai_judge import OpenAIJudgeConfig
    from emlab.metrics import MetricsConfig
    from emlab.study.model.config import ModelStudyConfig
    from emlab.study.world.config import StudyConfig
    from emlab.train.config import TrainConfig
    from emlab.world.config import WorldConfig

    return {
        "train": TrainConfig,
        "world": WorldConfig,
        "study": StudyConfig,
        "model-study": ModelStudyConfig,
        "judge": OpenAIJudgeConfig,
        "metrics": MetricsConfig,
    }


def _parse_override(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise EmlabError(f"--set {text!r}: expected FIELD=VALUE, e.g. --set optim.lr=1e-4")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def main() -> None:
    """Entry point (also `python -m emlab`)."""
    try:
        app()
    except EmlabError as e:  # errors raised outside a command's own handler
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
