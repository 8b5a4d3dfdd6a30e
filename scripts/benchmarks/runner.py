"""The runner: trains a profile's runs (two at a time, one thread each), each into the run cache,
and the calibration of a comparison profile's main regime.

A comparison profile (``web``, and every new one) runs here through ``command``, ``run_one`` and
``collect``: its regimes name their data builder (``builders``), its methods are
``(strategy, flags, takes --ratio)``. The ``paper`` profile keeps its own runner (the last
section), frozen with its design.
"""

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from . import data, record_measures
from .analysis import final, final_window
from .builders import builder
from .cache import cache_file, read_run, write_run
from .plan import authors_warmup, jobs, paper_jobs, run_name

SELECTION_FIELDS = (
    "epoch",
    "candidates",
    "kept",
    "selection_from_epoch",
    "early_learning_point",
    "audit_kept_precision",
    "audit_random_precision",
    "audit_auroc",
    "clipscore_std",
    "mean_loss",
)


def log(msg):
    print(msg, flush=True)


def command(cfg, spec, manifest, logs, name, label, ratio, seed, record):
    strategy, flags, _ = cfg["methods"][label]
    quarter = str(authors_warmup(spec["epochs"]))
    cmd = data.training_command(
        cfg["model"],
        spec["batch"],
        cfg["lr"],
        spec["warmup"],
        seed,
        spec["epochs"],
        manifest,
        logs,
        name,
        strategy,
        val_every=spec["val_every"],
    )
    cmd += [f.replace("{quarter}", quarter) for f in flags] + ["--selection-record", record]
    if "auto" in flags:  # the detector watches the validation split, never the reported test split
        cmd += ["--val-data", manifest["splits"]["val"]["pattern"]]
    if ratio is not None:
        cmd += ["--ratio", str(ratio)]
    if cfg.get("deterministic"):  # the same bits on every host the profile runs on
        cmd += ["--deterministic"]
    return cmd


def run_one(cfg, root, cache, job, threads=1):
    """Train one cell (or read its cached result)."""
    regime, label, ratio, seed = job
    spec = cfg["regimes"][regime]
    name = run_name(*job)
    cached = cache_file(cache, job)
    if os.path.isfile(cached):
        return read_run(cached)
    manifest = builder(spec).make(root, regime, spec, seed)
    logs, record = os.path.join(root, "logs"), os.path.join(root, "records", name)
    for folder in (os.path.join(logs, name), record):
        shutil.rmtree(folder, ignore_errors=True)
    started = time.time()
    env = data.run_env(threads)
    cpu = data.run_training(name, command(cfg, spec, manifest, logs, name, label, ratio, seed, record), env)
    return collect(cfg, job, manifest, logs, record, cached, time.time() - started, threads, cpu)


def collect(cfg, job, manifest, logs, record, cached, seconds, threads, cpu_seconds=None):
    """Read a finished training run into its cached JSON, then delete its logs and records
    (also called on its own to collect a run whose training finished but whose reading failed;
    ``seconds`` is then None: its training time is unknown). ``seconds`` is wall-clock, which
    also counts pauses; ``cpu_seconds`` is the run's CPU time, from which the budget is read."""
    regime, label, ratio, seed = job
    name = run_name(*job)
    run_dir = os.path.join(logs, name)
    results, selection, events = data.read_run(run_dir)
    data_dir = os.path.dirname(os.path.dirname(manifest["splits"]["train"]["pattern"]))  # <data>/train/{..}.tar
    out = {
        "regime": regime,
        "label": label,
        "ratio": ratio,
        "seed": seed,
        "strategy": cfg["methods"][label][0],
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "threads": threads,
        "code": data.code_version(),
        "events": events,
        "data": os.path.basename(data_dir),
        "cpu_kernels": data.cpu_kernels(run_dir),
        "curve": [
            {"epoch": r["epoch"], "rsum": r["retrieval_R@sum"], "rsum_rare": r.get("retrieval_R@sum[rare]")}
            for r in results
            if "retrieval_R@sum" in r
        ],
        "epochs": [{k: row[k] for k in SELECTION_FIELDS if k in row} for row in selection],
    }
    samples = builder(cfg["regimes"][regime]).samples(data_dir)
    out.update(
        record_measures.summarise_records(
            record, samples, label, selection, warmup_epochs=authors_warmup(cfg["regimes"][regime]["epochs"])
        )
    )
    write_run(cached, out)
    shutil.rmtree(run_dir, ignore_errors=True)  # the cached json holds what the report reads
    shutil.rmtree(record, ignore_errors=True)
    return out


def without_retired(todo, cache, retired):
    """``todo`` less the runs of ``retired`` methods that are not cached (this checkout cannot
    train them), and a line naming those, or None."""
    skipped = [j for j in todo if j[1] in retired and not os.path.isfile(cache_file(cache, j))]
    if not skipped:
        return todo, None
    labels = sorted({j[1] for j in skipped})
    note = f"[bench] {len(skipped)} runs skipped: {', '.join(labels)} left the product; " + "; ".join(
        f"{label} runs at commit {retired[label]}" for label in labels
    )
    return [j for j in todo if j not in skipped], note


def run_all(cfg, root, cache, only=None):
    todo, skipped = without_retired(jobs(cfg, only), cache, cfg.get("retired", {}))
    if skipped:
        log(skipped)
    done = []
    log(f"[bench] {len(todo)} runs, {cfg['parallel']} at a time; results cached in {cache}")
    for regime, spec in cfg["regimes"].items():  # data first, one set at a time
        if not only or regime == only:
            for seed in spec["seeds"]:
                builder(spec).make(root, regime, spec, seed)

    failed = []

    def one(job):
        try:
            out = run_one(cfg, root, cache, job)
        except Exception as exc:  # one broken run must not stop hours of the others; named at the end
            failed.append(run_name(*job))
            log(f"[bench] {run_name(*job)} FAILED, the profile goes on: {str(exc)[-1500:]}")
            return None
        done.append(out)
        log(
            f"[bench] {len(done)}/{len(todo)} {run_name(*job)}: final R@sum {final(out, final_window(cfg)):.1f} "
            f"({'?' if out['seconds'] is None else format(out['seconds'], '.0f')} s)"
            f"{' | ' + out['events'][0] if out['events'] else ''}"
        )
        return out

    with ThreadPoolExecutor(cfg["parallel"]) as pool:
        runs = [r for r in pool.map(one, todo) if r is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} runs failed (see the log above): {', '.join(failed)}")
    return runs


def calibrate(cfg, root, cache, seed, json_path=None, threads=2, calibration_cache=None):
    """The calibration measures of the main regime's full-data run for ``seed`` (any seed).

    The run is read from the report's ``cache`` where the profile made it already, and is otherwise
    trained into ``calibration_cache`` (default ``<root>/calibration``), never into ``cache``: a
    calibration on a new seed does not change what the next report reads."""
    regime = next(r for r, spec in cfg["regimes"].items() if spec.get("main"))
    job = (regime, "full", None, seed)
    source = cache if os.path.isfile(cache_file(cache, job)) else calibration_cache or os.path.join(root, "calibration")
    run = run_one(cfg, root, source, job, threads=threads)
    measures = {k: v for k, v in run["calibration"].items() if k != "table"}
    measures.update(
        seed=seed,
        regime=regime,
        final_rsum=run["curve"][-1]["rsum"],
        conditions={
            "auroc_at_gap_peak in [0.70, 0.85]": 0.70 <= measures["auroc_at_gap_peak"] <= 0.85,
            "rare_clean_auroc_first_quarter <= 0.65": measures["rare_clean_auroc_first_quarter"] <= 0.65,
        },
    )
    if json_path:
        with open(json_path, "w") as f:
            json.dump(measures, f, indent=1)
    return measures, run["calibration"]["table"]


# ----------------------------------------------------------------------------- the paper profile (frozen)


def paper_data(root, regime, spec, seed, noise_rate):
    # The val split (the retrieval detector's held-out data) leaves train and test byte-identical.
    arguments = data.data_arguments(
        train=spec["train"],
        test=spec["test"],
        seed=seed,
        noise_rate=noise_rate,
        noise_kind=spec["noise"],
        val=spec.get("val", 500),
    )
    return data.make_data(root, f"{regime}-s{seed}", arguments)


def paper_command(cfg, spec, manifest, logs, name, strategy, flags, seed, record):
    fixed = str(max(1, spec["epochs"] // 4))
    cmd = data.training_command(
        cfg["model"],
        spec["batch"],
        cfg["lr"],
        10,
        seed,
        spec["epochs"],
        manifest,
        logs,
        name,
        strategy,
        val_every=spec["val_every"],
    )
    cmd += [f.replace("{fixed}", fixed) for f in flags]
    if auto_signal(strategy, flags) == "retrieval":  # watches the val split, never the reported test split
        cmd += ["--val-data", manifest["splits"]["val"]["pattern"]]
    if strategy != "observe":
        cmd += ["--ratio", str(cfg["ratio"])]
    if record:
        cmd += ["--selection-record", record]
    return cmd


def add_replay(cfg, root, cache, kept):
    """Add the delta replay (``record_measures.delta_replay``) to the cached runs of the methods
    whose choices ignore the scores, from their ``--selection-record`` folders kept in ``kept``
    (one folder a run, named as the run; the runner deletes its own after reading them, so they
    are kept while it runs, e.g. by hard links). A run that has its replay, or whose folder is
    missing, is left as it is. The names of the runs it added the replay to."""
    added = []
    for job in jobs(cfg):
        regime, label, _, _ = job
        cached, folder = cache_file(cache, job), os.path.join(kept, run_name(*job))
        if label not in record_measures.REPLAYED or not os.path.isfile(cached) or not os.path.isdir(folder):
            continue
        run = read_run(cached)
        if run.get("replay"):
            continue
        data_dir = os.path.join(root, "data", run["data"])
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f"{run_name(*job)}: its data set {data_dir} is missing (run the profile first)")
        samples = builder(cfg["regimes"][regime]).samples(data_dir)
        try:
            records = record_measures.load_records(folder, samples)
        except (OSError, ValueError) as e:  # an empty folder, a truncated file
            raise ValueError(f"{folder}: its records cannot be read ({e})") from e
        epochs = cfg["regimes"][regime]["epochs"]
        if records["epoch"].nunique() != epochs:
            raise ValueError(f"{folder}: records of {records['epoch'].nunique()} epochs, the run had {epochs}")
        run["replay"] = record_measures.delta_replay(records, authors_warmup(epochs))
        run["replay_source"] = "kept records"  # added after the run, from its records
        write_run(cached, run)
        added.append(run_name(*job))
    return added


def paper_run_one(cfg, root, regime, spec, label, seed):
    """Train one cell (or read its cached result)."""
    name = run_name(regime, label, None, seed)
    cached = cache_file(os.path.join(root, "runs"), (regime, label, None, seed))
    if os.path.isfile(cached):
        return read_run(cached)
    strategy, flags = cfg["methods"][label]
    manifest = paper_data(root, regime, spec, seed, cfg["noise_rate"])
    logs = os.path.join(root, "logs")
    shutil.rmtree(os.path.join(logs, name), ignore_errors=True)
    record = os.path.join(root, "records", name) if label in cfg["recorded"] else None
    if record:
        shutil.rmtree(record, ignore_errors=True)
    started = time.time()
    env = data.run_env(1)
    data.run_training(name, paper_command(cfg, spec, manifest, logs, name, strategy, flags, seed, record), env)
    run_dir = os.path.join(logs, name)
    curve, epochs, events = data.read_run(run_dir)
    curve = [r for r in curve if "retrieval_R@sum" in r]
    out = {
        "regime": regime,
        "label": label,
        "seed": seed,
        "strategy": strategy,
        "seconds": time.time() - started,
        "auto_signal": auto_signal(strategy, flags),
        "curve": [{"epoch": r["epoch"], "rsum": r["retrieval_R@sum"]} for r in curve],
        "epochs": epochs,
        "events": events,
        "groups": record_measures.record_groups(record, spec["epochs"]) if record else None,
    }
    write_run(cached, out)
    shutil.rmtree(run_dir, ignore_errors=True)  # the cached json holds what the report reads
    return out


def auto_signal(strategy, flags):
    """The signal an ``auto`` warm-up watches in this run (the flag, else the default); None
    without an ``auto`` warm-up."""
    if "auto" not in flags:
        return None
    if "--dissect-auto-signal" in flags:
        return flags[flags.index("--dissect-auto-signal") + 1]
    from open_clip_dissect.core.strategies import strategy_class

    return next(o.default for o in strategy_class(strategy).options if o.flag == "--dissect-auto-signal")


def paper_run_all(cfg, root):
    todo = [(regime, cfg["regimes"][regime], label, seed) for regime, label, _, seed in paper_jobs(cfg)]
    done = []
    log(f"[paper] {len(todo)} runs, {cfg['parallel']} at a time; results cached in {root}/runs")

    def one(job):
        regime, spec, label, seed = job
        out = paper_run_one(cfg, root, regime, spec, label, seed)
        done.append(out)
        log(
            f"[paper] {len(done)}/{len(todo)} {run_name(regime, label, None, seed)}: final R@sum "
            f"{out['curve'][-1]['rsum']:.1f} ({out['seconds']:.0f} s){' | ' + out['events'][0] if out['events'] else ''}"
        )
        return out

    # The data sets are made first, one at a time (the runs then read them in parallel).
    for regime, spec in cfg["regimes"].items():
        for seed in cfg["seeds"]:
            paper_data(root, regime, spec, seed, cfg["noise_rate"])
    with ThreadPoolExecutor(cfg["parallel"]) as pool:
        return list(pool.map(one, todo))
