"""The run cache: one JSON file a run, ``<cache>/<run name>.json``, written atomically. The report
reads only the runs of its design (``plan.in_design``); ``--calibrate`` keeps its own cache."""

import json
import os

from .plan import run_name


def cache_file(cache, job):
    """Where one cell's result is cached: ``<cache>/<run name>.json``."""
    return os.path.join(cache, f"{run_name(*job)}.json")


def read_run(cached):
    with open(cached) as f:
        return json.load(f)


def write_run(cached, run):
    """Write a run's result, atomically (a crash leaves the old file or none)."""
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached + ".tmp", "w") as f:
        json.dump(run, f)
    os.replace(cached + ".tmp", cached)


def read_cache(cache):
    """Every cached run in ``cache``, by file name; pass it through ``plan.in_design`` before a report."""
    runs = []
    if os.path.isdir(cache):
        for name in sorted(os.listdir(cache)):
            if name.endswith(".json"):
                runs.append(read_run(os.path.join(cache, name)))
    return runs
