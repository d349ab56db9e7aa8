"""Parameter-space analyses of solutions: efficiency, stability, pre-training importance,
directions.

Figures live in `emlab.analysis.figures` and the CLI commands in `emlab.analysis.cli`. Names are
imported on first use (they load torch and
transformers), so `emlab --help` stays fast.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "EfficiencyCurve": "emlab.analysis.efficiency",
    "EfficiencyResult": "emlab.analysis.efficiency",
    "ImportanceResult": "emlab.analysis.importance",
    "KLEvaluator": "emlab.analysis.importance",
    "LossEvaluator": "emlab.analysis.loss",
    "StabilityCurve": "emlab.analysis.stability",
    "StabilityResult": "emlab.analysis.stability",
    "ablated": "emlab.analysis.directions",
    "compare_efficiency": "emlab.analysis.efficiency",
    "compare_stability": "emlab.analysis.stability",
    "cosine_matrix": "emlab.analysis.directions",
    "direction_steering": "emlab.analysis.directions",
    "efficiency_curve": "emlab.analysis.efficiency",
    "load_texts": "emlab.analysis.text",
    "lora_cosines": "emlab.analysis.directions",
    "mean_activations": "emlab.analysis.directions",
    "mean_diff_directions": "emlab.analysis.directions",
    "pretraining_importance": "emlab.analysis.importance",
    "random_solution": "emlab.analysis.baselines",
    "stability_curve": "emlab.analysis.stability",
    "text_batches": "emlab.analysis.text",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emlab.analysis' has no attribute {name!r}")


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
