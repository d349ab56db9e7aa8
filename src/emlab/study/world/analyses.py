"""The analyses of one seed's general (no KL) and narrow (KL) solutions in the world."""

from __future__ import annotations

from emlab.models.config import ModelConfig
from emlab.models.load import load_model
from emlab.solutions import load_solution
from emlab.study.common.analyses import Analysis, compare_solutions
from emlab.study.world.config import StudyConfig
from emlab.world import World, narrow_conversations, pretraining_documents, pretraining_text


def analyse_pair(
    study: StudyConfig, world: World, model_dir: str, general_dir: str, narrow_dir: str, seed: int
) -> Analysis:
    """Efficiency (loss vs norm), stability (loss under orthogonal noise) and importance (KL on
    pre-training text vs norm) of the general (no KL) and narrow (KL) solutions of one seed."""
    model, tokenizer = load_model(ModelConfig(name_or_path=model_dir))
    heldout = narrow_conversations(world, study.trained_domain, split="heldout")
    docs = pretraining_documents(world, n=study.analysis.importance_documents, seed=10_000 + seed)
    return compare_solutions(
        model,
        tokenizer,
        load_solution(general_dir),
        load_solution(narrow_dir),
        heldout,
        pretraining_text(docs, tokenizer),
        study.analysis,
        seed,
        max_length=study.model.max_positions,
    )
