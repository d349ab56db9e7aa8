"""Parameter-space analyses of solutions: efficiency, stability, pre-training importance, directions.

Figures live in `emlab.analysis.figures` and the CLI commands in `emlab.analysis.cli`.
"""

from emlab.analysis.baselines import random_solution
from emlab.analysis.directions import (
    ablated,
    cosine_matrix,
    direction_steering,
    lora_cosines,
    mean_activations,
    mean_diff_directions,
)
from emlab.analysis.efficiency import (
    EfficiencyCurve,
    EfficiencyResult,
    compare_efficiency,
    efficiency_curve,
)
from emlab.analysis.importance import ImportanceResult, KLEvaluator, pretraining_importance
from emlab.analysis.loss import LossEvaluator
from emlab.analysis.stability import (
    StabilityCurve,
    StabilityResult,
    compare_stability,
    stability_curve,
)
from emlab.analysis.text import load_texts, text_batches

__all__ = [
    "EfficiencyCurve",
    "EfficiencyResult",
    "ImportanceResult",
    "KLEvaluator",
    "LossEvaluator",
    "StabilityCurve",
    "StabilityResult",
    "ablated",
    "compare_efficiency",
    "compare_stability",
    "cosine_matrix",
    "direction_steering",
    "efficiency_curve",
    "load_texts",
    "lora_cosines",
    "mean_activations",
    "mean_diff_directions",
    "pretraining_importance",
    "random_solution",
    "stability_curve",
    "text_batches",
]
