"""`emlab reproduce`: the study end to end (world, models, fine-tunes, evaluation, analyses, report)."""
