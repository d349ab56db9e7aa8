"""Resumable checkpoints: trainable weights, optimiser, scheduler, RNG state and step."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from emlab.io import atomic_dir

PREFIX = "step-"


def save_checkpoint(
    folder: Path,
    step: int,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    keep: int,
) -> Path:
    """Write `folder/step-NNNNNNNN` atomically, then delete all but the newest `keep`."""
    target = folder / f"{PREFIX}{step:08d}"
    with atomic_dir(target) as tmp:
        save_file(
            {n: p.detach().contiguous().cpu() for n, p in params.items()},
            tmp / "trainable.safetensors",
        )
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
            },
            tmp / "state.pt",
        )
    for old in sorted(folder.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`, if any."""
    found = sorted(p for p in folder.glob(f"{PREFIX}*") if (p / "state.pt").exists())
    return found[-1] if found else None


def load_checkpoint(
    path: Path,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> int:
    """Restore weights, optimiser, scheduler and RNG in place; return the step it was saved at."""
    weights = load_file(path / "trainable.safetensors")
    if set(weights) != set(params):
        raise RuntimeError(f"checkpoint {path} does not match this run's trainable parameters")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    state = torch.load(path / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])
