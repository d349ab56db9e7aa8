"""What both studies use: the task graph, cached stages, run keys, config pieces, results, report
and figures."""
