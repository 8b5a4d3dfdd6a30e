"""The runs a design asks for, and nothing else: a job is ``(regime, label, ratio, seed)`` (ratio
None where the method sets its own count, and in the ``paper`` profile, which has one ratio)."""


def authors_warmup(epochs):
    """The authors' warm-up of DISSect: a quarter of the epochs, at least one (``{quarter}``)."""
    return max(1, epochs // 4)


def run_name(regime, label, ratio, seed):
    return f"{regime}-{label}" + (f"-r{ratio}" if ratio is not None else "") + f"-s{seed}"


def jobs(cfg, only=None):
    """Every (regime, label, ratio, seed) of the profile in the order they run: regime by regime;
    in each, full data on every seed first (it calibrates and sets the precision), then seed by
    seed every method and ratio (a partial profile holds complete paired comparisons)."""
    out = []
    for regime, spec in cfg["regimes"].items():
        if only and regime != only:
            continue
        out += [(regime, "full", None, seed) for seed in spec["seeds"] if "full" in spec["methods"]]
        for seed in spec["seeds"]:
            for label in spec["methods"]:
                if label != "full":
                    out += [
                        (regime, label, ratio, seed)
                        for ratio in (spec["ratios"] if cfg["methods"][label][2] else (None,))
                    ]
    return out


def paper_jobs(cfg):
    """Every run of the ``paper`` profile (one ratio for all), in the order it runs them."""
    return [
        (regime, label, None, seed)
        for regime, spec in cfg["regimes"].items()
        for label in spec["methods"]
        for seed in cfg["seeds"]
    ]


def job_of(run):
    """The job a cached run answers (``paper`` runs have no ratio)."""
    return (run["regime"], run["label"], run.get("ratio"), run["seed"])


def in_design(runs, design_jobs):
    """The runs that answer one of ``design_jobs``: a run of another seed, ratio, method or regime
    (one that ``--calibrate`` or an older design left in the cache) never enters a report."""
    wanted = set(design_jobs)
    return [r for r in runs if job_of(r) in wanted]
