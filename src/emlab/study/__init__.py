"""`emlab reproduce`: the study end to end (world, models, fine-tunes, evaluation, analyses,
report).

`common/` holds what both studies use (the task graph, cached stages, run keys, shared
config pieces, results, report and figure helpers); `world/` the study on the synthetic
world; `model/` the study on a real chat model. Neither study imports the other."""
