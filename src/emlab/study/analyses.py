"""The paper's three lines of evidence for one (general, narrow) pair of world solutions."""

from __future__ import annotations

import numpy as np

from emlab.analysis import (
    KLEvaluator,
    LossEvaluator,
    compare_efficiency,
    compare_stability,
    pretraining_importance,
    text_batches,
)
from emlab.models.config import ModelConfig
from emlab.models.load import load_model
from emlab.solutions import load_solution
from emlab.study.config import StudyConfig
from emlab.world import World, narrow_conversations, pretraining_documents, pretraining_text


def analyse_pair(study: StudyConfig, world: World, model_dir: str, general_dir: str, narrow_dir: str, seed: int) -> dict:
    """Efficiency (loss vs norm), stability (loss under orthogonal noise) and importance (KL on
    pre-training text vs norm) of the general (no KL) and narrow (KL) solutions of one seed."""
    model, tokenizer = load_model(ModelConfig(name_or_path=model_dir))
    solutions = {"general": load_solution(general_dir), "narrow": load_solution(narrow_dir)}
    heldout = narrow_conversations(world, study.trained_domain, split="heldout")
    losses = LossEvaluator(model, tokenizer, heldout, batch_size=32, max_length=study.model.max_positions)
    grid = study.analysis
    efficiency = compare_efficiency(losses, solutions, multipliers=np.linspace(0.0, 2.0, grid.multipliers).tolist(), random_seed=seed)
    stability = compare_stability(losses, solutions, eps=grid.eps, seeds=range(grid.noise_seeds))
    docs = pretraining_documents(world, n=grid.importance_documents, seed=10_000 + seed)
    texts = pretraining_text(docs, tokenizer)
    kl = KLEvaluator(model, text_batches(tokenizer, texts, seq_len=128, batch_size=32, max_chunks=grid.importance_documents))
    general_norm = solutions["general"].norm()
    norms = [f * general_norm for f in grid.importance_fractions]
    importance = pretraining_importance(kl, solutions, norms=norms, random_seeds=(seed,))
    half = grid.eps.index(0.5)
    at_general = grid.importance_fractions.index(1.0)
    return {
        "efficiency": efficiency.to_json(),
        "stability": stability.to_json(),
        "importance": importance.to_json(),
        "summary": {
            "norm_general": general_norm,
            "norm_narrow": solutions["narrow"].norm(),
            "base_loss": efficiency.base_loss,
            "loss_general": efficiency.curve("general").loss_at_one,
            "loss_narrow": efficiency.curve("narrow").loss_at_one,
            "loss_at_general_norm": efficiency.at_reference_norm,
            "loss_per_norm_sq": {c.name: c.loss_per_norm_sq for c in efficiency.curves},
            "min_loss": {c.name: min(c.losses) for c in efficiency.curves},
            "relative_loss_increase_eps_0.5": {
                c.name: float(np.nanmean(np.array(c.relative)[:, half])) for c in stability.curves
            },
            "kl_at_general_norm": {name: float(np.mean(np.array(rows)[:, at_general])) for name, rows in importance.kl.items()},
        },
    }
