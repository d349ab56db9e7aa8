"""`emlab analyze ...`: efficiency, stability, pre-training importance and directions of solutions.

    emlab analyze efficiency GENERAL NARROW --data bad_medical.jsonl --out out/

GENERAL and NARROW are solution folders (e.g. runs/general/solution). Each command writes
<analysis>.json and <analysis>.png into --out. Without --data, efficiency and stability use
the held-out split `emlab train` wrote in the solutions' run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emlab.clikit import fail
from emlab.errors import EmlabError

analyze_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Compare solutions in parameter space."
)

Solutions = Annotated[
    list[str],
    typer.Argument(
        help=(
            "Solution folders as NAME=PATH or PATH (name: the run folder's). The first is the"
            " reference (e.g. general)."
        )
    ),
]
Model = Annotated[str, typer.Option("--model", help="Base model: local dir, hub id or 'smollm2'.")]
Out = Annotated[Path, typer.Option("--out", help="Output folder for JSON and PNG.")]
Data = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help=(
            "Narrow chat JSONL (held-out conversations) to compute the loss on. Default: the"
            " heldout.jsonl of the solutions' run folder."
        ),
    ),
]
Limit = Annotated[int, typer.Option("--limit", help="Conversations of --data used (the first N).")]
BatchSize = Annotated[
    int, typer.Option("--batch-size", help="Conversations or text chunks per batch.")
]
MaxLength = Annotated[int, typer.Option("--max-length", help="Tokens per conversation.")]
Device = Annotated[
    str, typer.Option("--device", help="'auto' (cuda if available), 'cpu', 'cuda'...")
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bar on stderr.")]


def _model(name: str, device: str, quiet: bool = False):
    """The model on `device` and its tokenizer; `quiet`: without transformers' loading bar (or
    warnings)."""
    from contextlib import nullcontext

    import torch

    from emlab.models.config import ModelConfig
    from emlab.models.load import load_model
    from emlab.study.common.logs import quiet_transformers

    with quiet_transformers() if quiet else nullcontext():
        model, tokenizer = load_model(ModelConfig(name_or_path=name))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device), tokenizer


def _solutions(items: list[str]) -> dict:
    """Parse NAME=PATH items into named solutions (default name: the folder, or its run folder)."""
    from emlab.solutions import load_solution

    out = {}
    for item in items:
        name, folder = _item(item)
        name = name or (folder.resolve().parent.name if folder.name == "solution" else folder.name)
        if name in out:
            raise EmlabError(f"two solutions are named {name!r}: name them, e.g. general={folder}")
        out[name] = load_solution(folder)
    return out


def _item(item: str) -> tuple[str, Path]:
    """A NAME=PATH or PATH solution argument as (name or '', folder)."""
    name, _, path = item.rpartition("=")
    return name, Path(path)


def _chats(path: Path) -> list:
    from emlab.data.chat import read_chat_jsonl

    return read_chat_jsonl(path)


def _loss_data(data: Path | None, items: list[str]) -> tuple[list, str]:
    """The conversations of --data or, without it, the held-out split (`heldout.jsonl`) of the
    run folder(s) the solutions lie in (`<run>/solution`); EmlabError when there is none or the
    runs hold out different conversations. Also returns the file's name, for messages."""
    from emlab.runs import HELDOUT

    if data is None:
        runs = [folder.parent for _, folder in map(_item, items) if folder.name == "solution"]
        found = [run / HELDOUT for run in runs if (run / HELDOUT).is_file()]
        if not found:
            raise EmlabError(
                "no --data given and no solution lies in a run folder with a held-out split"
                f" ({HELDOUT}, written by `emlab train` when data.heldout_fraction > 0): pass"
                " --data with a chat JSONL of held-out narrow conversations."
            )
        if len({p.read_bytes() for p in found}) > 1:
            raise EmlabError(
                "no --data given and the solutions' runs hold out different conversations"
                f" ({', '.join(map(str, found))}): pass --data with the one to use."
            )
        data = found[0]
        typer.echo(f"data: {data} (held-out split of the run)")
    return _chats(data), str(data)


def _write(out: Path, stem: str, result, plot, counts=None) -> None:
    """`<stem>.json` (with `counts`, a DataCounts of the loss data, under "data") and `.png`."""
    from dataclasses import asdict

    from emlab.io import write_json_atomic

    extra = {"data": asdict(counts)} if counts is not None else {}
    write_json_atomic(out / f"{stem}.json", {**result.to_json(), **extra})
    plot(result, out / f"{stem}.png")
    typer.echo(f"wrote {out / stem}.json and .png")


@analyze_app.command("efficiency")
def efficiency(
    solutions: Solutions,
    data: Data = None,
    model: Model = "smollm2",
    out: Out = Path("analysis"),
    points: Annotated[int, typer.Option("--points", help="Multipliers m on [0, 2].")] = 21,
    limit: Limit = 256,
    batch_size: BatchSize = 8,
    max_length: MaxLength = 512,
    random_seed: Annotated[
        int, typer.Option("--random-seed", help="Seed of the random direction (-1: none).")
    ] = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Loss on the narrow data vs solution norm (m in [0, 2]); general vs narrow vs random."""
    import numpy as np

    from emlab.analysis.efficiency import compare_efficiency
    from emlab.analysis.figures import plot_efficiency
    from emlab.analysis.loss import LossEvaluator

    try:
        sols = _solutions(solutions)
        conversations, source = _loss_data(data, solutions)
        lm, tokenizer = _model(model, device, quiet)
        evaluator = LossEvaluator(
            lm,
            tokenizer,
            conversations,
            batch_size,
            max_length,
            limit,
            progress=None if quiet else "efficiency",
            source=source,
        )
        result = compare_efficiency(
            evaluator,
            sols,
            np.linspace(0, 2, points).tolist(),
            random_seed=None if random_seed < 0 else random_seed,
        )
        _write(out, "efficiency", result, plot_efficiency, evaluator.counts)
    except EmlabError as e:
        fail(e)


@analyze_app.command("stability")
def stability(
    solutions: Solutions,
    data: Data = None,
    model: Model = "smollm2",
    out: Out = Path("analysis"),
    eps: Annotated[
        list[float] | None,
        typer.Option("--eps", help="Noise fractions (repeat the option); default 0.01..1."),
    ] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", help="Noise seeds per eps (>= 5 for the paper).")
    ] = 5,
    limit: Limit = 256,
    batch_size: BatchSize = 8,
    max_length: MaxLength = 512,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Relative loss increase under orthogonal noise of fraction eps, mean and 95% CI over seeds."""
    from emlab.analysis.figures import plot_stability
    from emlab.analysis.loss import LossEvaluator
    from emlab.analysis.stability import DEFAULT_EPS, compare_stability

    try:
        sols = _solutions(solutions)
        conversations, source = _loss_data(data, solutions)
        lm, tokenizer = _model(model, device, quiet)
        evaluator = LossEvaluator(
            lm,
            tokenizer,
            conversations,
            batch_size,
            max_length,
            limit,
            progress=None if quiet else "stability",
            source=source,
        )
        result = compare_stability(evaluator, sols, eps or DEFAULT_EPS, list(range(seeds)))
        _write(out, "stability", result, plot_stability, evaluator.counts)
    except EmlabError as e:
        fail(e)


@analyze_app.command("importance")
def importance(
    solutions: Solutions,
    text: Annotated[
        str,
        typer.Option(
            "--text",
            help=(
                "Pre-training text: .txt/.jsonl/.parquet file or folder, 'pydoc' (offline), or a HF"
                " dataset id."
            ),
        ),
    ] = "pydoc",
    model: Model = "smollm2",
    out: Out = Path("analysis"),
    norms: Annotated[
        list[float] | None,
        typer.Option(
            "--norm",
            help="Norms (repeat the option); default 6 points up to the largest solution norm.",
        ),
    ] = None,
    random_seeds: Annotated[
        int, typer.Option("--random-seeds", help="Random directions (seeds).")
    ] = 3,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per text chunk.")] = 128,
    chunks: Annotated[int, typer.Option("--chunks", help="Text chunks evaluated.")] = 64,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """KL(base || steered) on pre-training text vs norm, for each direction and random ones."""
    from emlab.analysis.figures import plot_importance
    from emlab.analysis.importance import KLEvaluator, pretraining_importance
    from emlab.analysis.text import load_texts, text_batches

    try:
        sols = _solutions(solutions)
        lm, tokenizer = _model(model, device, quiet)
        batches = text_batches(
            tokenizer, load_texts(text, n_docs=max(chunks, 100)), seq_len, batch_size, chunks
        )
        result = pretraining_importance(
            KLEvaluator(lm, batches, progress=None if quiet else "importance"),
            sols,
            norms,
            list(range(random_seeds)),
        )
        _write(out, "importance", result, plot_importance)
    except EmlabError as e:
        fail(e)


@analyze_app.command("directions")
def directions(
    aligned: Annotated[Path, typer.Option("--aligned", help="Chat JSONL with aligned answers.")],
    misaligned: Annotated[
        Path, typer.Option("--misaligned", help="Chat JSONL with misaligned answers.")
    ],
    solutions: Annotated[
        list[str] | None,
        typer.Argument(help="Solutions to compare with the directions (NAME=PATH or PATH)."),
    ] = None,
    model: Model = "smollm2",
    out: Out = Path("analysis"),
    batch_size: BatchSize = 8,
    max_length: MaxLength = 512,
    device: Device = "auto",
) -> None:
    """Per-layer mean-difference directions (misaligned - aligned), their cosine similarities,
    and cosines with steering vectors and between LoRA adapters."""
    from safetensors.torch import save_file

    from emlab.analysis.directions import cosine_matrix, mean_diff_directions
    from emlab.analysis.figures import plot_cosines
    from emlab.io import write_json_atomic

    try:
        sols = _solutions(solutions or [])
        lm, tokenizer = _model(model, device)
        dirs = mean_diff_directions(
            lm, tokenizer, _chats(aligned), _chats(misaligned), batch_size, max_length
        )  # (L, d)
        out.mkdir(parents=True, exist_ok=True)
        save_file({"directions": dirs.contiguous()}, out / "directions.safetensors")
        report = _direction_report(dirs, sols)
        write_json_atomic(out / "directions.json", report)
        plot_cosines(
            cosine_matrix(dirs),
            [f"L{i}" for i in range(len(dirs))],
            out / "directions.png",
            "Mean-diff directions across layers",
        )
        typer.echo(f"wrote {out}/directions.safetensors, .json and .png")
    except EmlabError as e:
        fail(e)


def _direction_report(dirs, sols: dict) -> dict:
    """Norms and cross-layer cosines of the directions; cosines with steering vectors at a
    layer's output; A/B cosines between every pair of LoRA solutions."""
    import torch

    from emlab.analysis.directions import cosine_matrix, lora_cosines
    from emlab.solutions import LoraSolution, SteeringSolution

    report: dict = {
        "norms": dirs.norm(dim=-1).tolist(),
        "cosines_between_layers": cosine_matrix(dirs).tolist(),
    }
    for name, s in sols.items():
        if isinstance(s, SteeringSolution) and s.point == "layer":
            report.setdefault("steering_cosines", {})[name] = float(
                cosine_matrix(torch.stack([dirs[s.layer], s.v.float().cpu()]))[0, 1]
            )
    loras = [(n, s) for n, s in sols.items() if isinstance(s, LoraSolution)]
    for i, (n1, s1) in enumerate(loras):
        for n2, s2 in loras[i + 1 :]:
            pair = {
                m: {k: v.tolist() for k, v in ab.items()} for m, ab in lora_cosines(s1, s2).items()
            }
            report.setdefault("lora_cosines", {})[f"{n1}|{n2}"] = pair
    return report
