"""Names of evaluation tasks and metrics, importable without torch (the entry point checks
``trainer.monitor`` and ``eval.*`` against them before any heavy import)."""

TASKS = ("topn", "ctr")
#: top-N metrics, each reported at every K of ``eval.ks``
METRICS = ("recall", "precision", "hr", "ndcg", "mrr", "map")
MAP_DENOMINATORS = ("min_k_rel", "rel", "k", "hits")
#: CTR metrics (GAUC only with ``eval.gauc``)
CTR_METRICS = ("auc", "logloss")
#: metrics where lower is better (model selection flips their sign)
LOWER_IS_BETTER = ("logloss",)


def monitor_choices(tasks, ks, gauc: bool = False) -> list[str]:
    """Every metric an evaluation with these options reports (what ``trainer.monitor`` may name)."""
    choices: list[str] = []
    if "ctr" in tasks:
        choices += [*CTR_METRICS, *(["gauc"] if gauc else [])]
    if "topn" in tasks:
        choices += [f"{metric}@{k}" for metric in METRICS for k in sorted(set(int(k) for k in ks))]
    return choices
