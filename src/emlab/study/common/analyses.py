"""The paper's three lines of evidence for one (general, narrow) pair of solutions (world or real
model), as a typed stage result."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.analysis import (
    KLEvaluator,
    LossEvaluator,
    compare_efficiency,
    compare_stability,
    pretraining_importance,
    text_batches,
)
from emlab.models.chat import Conversation, DataCounts
from emlab.solutions import Solution
from emlab.study.common.config import AnalysisConfig
from emlab.study.common.stages import StageResult


class AnalysisSummary(BaseModel):
    """The numbers of one seed's comparison that the report averages over seeds. Dicts are by
    solution ('general', 'narrow' and, where measured, 'random'); None where no value was finite."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    norm_general: float
    norm_narrow: float
    base_loss: float
    loss_general: float
    loss_narrow: float
    loss_at_general_norm: dict[str, float | None]
    loss_per_norm_sq: dict[str, float | None]
    min_loss: dict[str, float | None]
    relative_loss_increase_eps_half: dict[str, float | None] = Field(
        alias="relative_loss_increase_eps_0.5"
    )
    kl_at_general_norm: dict[str, float | None]


class Analysis(StageResult):
    """One (general, narrow) pair's analyses: the JSON of the efficiency, stability and
    importance comparisons (emlab.analysis's `to_json`), their summary, and what `max_length`
    did to the held-out conversations of the loss (as `emlab analyze` records under "data")."""

    efficiency: dict[str, Any]
    stability: dict[str, Any]
    importance: dict[str, Any]
    summary: AnalysisSummary
    data: DataCounts = Field(
        description=(
            "The held-out narrow conversations of the efficiency and stability losses: how many"
            " there were, were kept (truncated ones included), truncated to max_length, and"
            " dropped (no assistant token within it), with their shortest and longest tokenised"
            " lengths (`emlab.models.chat.DataCounts`, from the loss evaluator)."
        )
    )

    def figure_data(self) -> dict[str, Any]:
        """The JSON the figures read (the result.json layout)."""
        return self.model_dump(by_alias=True)


def compare_solutions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    general: Solution,
    narrow: Solution,
    heldout: list[Conversation],
    texts: list[str],
    grid: AnalysisConfig,
    seed: int,
    max_length: int,
    batch_size: int = 32,
    seq_len: int = 128,
    max_rows: int = 64,
    progress: bool = False,
) -> Analysis:
    """The three analyses of a (general, narrow) pair on held-out narrow conversations (loss; the
    first `grid.max_heldout` of them) and pre-training `texts` (KL, chunks of `seq_len` tokens),
    with the grids of `grid`;
    `batch_size` conversations or chunks per batch, at most `max_rows` rows per forward pass;
    progress bars of the forward passes on stderr when `progress` (and then a line when
    `max_length` truncated or dropped conversations; the result's `data` counts them always).
    Raises EmlabError when no held-out conversation has an assistant token within max_length."""
    solutions = {"general": general, "narrow": narrow}
    losses = LossEvaluator(
        model,
        tokenizer,
        heldout[: grid.max_heldout],
        batch_size=batch_size,
        max_length=max_length,
        max_rows=max_rows,
        progress="held-out loss" if progress else None,
    )
    efficiency = compare_efficiency(
        losses,
        solutions,
        multipliers=np.linspace(0.0, 2.0, grid.multipliers).tolist(),
        random_seed=seed,
    )
    stability = compare_stability(losses, solutions, eps=grid.eps, seeds=range(grid.noise_seeds))
    batches = text_batches(
        tokenizer,
        texts,
        seq_len=seq_len,
        batch_size=batch_size,
        max_chunks=grid.importance_documents,
    )
    kl = KLEvaluator(model, batches, max_rows=max_rows, progress="importance" if progress else None)
    general_norm = general.norm()
    norms = [f * general_norm for f in grid.importance_fractions]
    importance = pretraining_importance(kl, solutions, norms=norms, random_seeds=(seed,))
    half = grid.eps.index(0.5)
    at_general = grid.importance_fractions.index(1.0)
    summary = AnalysisSummary(
        norm_general=general_norm,
        norm_narrow=narrow.norm(),
        base_loss=efficiency.base_loss,
        loss_general=efficiency.curve("general").loss_at_one,
        loss_narrow=efficiency.curve("narrow").loss_at_one,
        loss_at_general_norm=efficiency.at_reference_norm,
        loss_per_norm_sq={c.name: c.loss_per_norm_sq for c in efficiency.curves},
        min_loss={c.name: min(c.losses) for c in efficiency.curves},
        relative_loss_increase_eps_half={
            c.name: _finite_mean(np.array(c.relative)[:, half]) for c in stability.curves
        },
        kl_at_general_norm={
            name: float(np.mean(np.array(rows)[:, at_general]))
            for name, rows in importance.kl.items()
        },
    )
    return Analysis(
        efficiency=efficiency.to_json(),
        stability=stability.to_json(),
        importance=importance.to_json(),
        summary=summary,
        data=losses.counts,
    )


def _finite_mean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN, without numpy's warning, when there is none)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
