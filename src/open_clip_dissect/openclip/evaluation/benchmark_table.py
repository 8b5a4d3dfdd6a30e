"""The DISSect paper's Table 1 from our files: one panel per benchmark (MS-COCO 5k, Flickr30K
1k), a row per method, a column group per selection ratio with IR@1, IR@10, TR@1, TR@10 and R@sum.

A run's numbers come from the JSON that ``open-clip-dissect eval --benchmark`` wrote next to its
last checkpoint (``checkpoints/epoch_latest.<benchmark>.json``, else ``epoch_<N>...``, highest N), else from the last
``--retrieval-benchmark`` record in ``checkpoints/results.jsonl``; its method and ratio from the
``params.txt`` OpenCLIP writes in the run's folder. Pure Python: no torch import.
"""

import glob
import json
import os
import re
from typing import Dict, List, Optional

from open_clip_dissect.errors import InputError

COLUMNS = ("IR@1", "IR@10", "TR@1", "TR@10", "R@sum")
TITLES = {
    "mscoco_captions": "Zero-shot MS-COCO (5k test set)",
    "flickr30k": "Zero-shot Flickr30K (1k test set)",
    "flickr8k": "Zero-shot Flickr8K (1k test set)",
}
FULL = "full data"


def read_params(run_dir: str) -> Dict[str, str]:
    """``name: value`` lines of OpenCLIP's ``params.txt`` (empty if the file is missing)."""
    path = os.path.join(run_dir, "params.txt")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return dict(line.rstrip("\n").split(": ", 1) for line in f if ": " in line)


def _read_json(path: str) -> dict:
    """An ``eval --benchmark`` JSON: an object with a number for every column of the table."""
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise InputError(path, f"not a JSON evaluation file: {exn}") from None
    lacking = [c for c in COLUMNS if not isinstance(metrics, dict) or not isinstance(metrics.get(c), (int, float))]
    if lacking:
        raise InputError(
            path, f"not an `eval --benchmark` result: no number for {', '.join(lacking)} (rerun the eval, or delete it)"
        )
    return metrics


def run_results(run_dir: str) -> Dict[str, dict]:
    """``{benchmark: metrics}`` of a run's final evaluation."""
    out: Dict[str, dict] = {}
    found: Dict[str, int] = {}
    for path in glob.glob(os.path.join(run_dir, "checkpoints", "epoch_*.*.json")):
        match = re.fullmatch(r"epoch_(\d+|latest)\.([\w-]+)\.json", os.path.basename(path))
        if not match:
            continue
        # epoch_latest.pt is rewritten every epoch: its evaluation is the newest one
        epoch = float("inf") if match.group(1) == "latest" else int(match.group(1))
        if epoch >= found.get(match.group(2), -1):
            found[match.group(2)] = epoch
            out[match.group(2)] = _read_json(path)
    results = os.path.join(run_dir, "checkpoints", "results.jsonl")
    if os.path.isfile(results):
        with open(results) as f:
            for number, line in enumerate(f, 1):
                try:
                    record = json.loads(line) if line.strip() else {}
                except json.JSONDecodeError:
                    raise InputError(
                        results, f"line {number} is not JSON (a run still writing it, or a damaged file)"
                    ) from None
                for key in record:
                    name = key[: -len("_R@sum")] if key.endswith("_R@sum") else None
                    if name and name in TITLES and name not in found:
                        out[name] = {c: record[f"{name}_{c}"] for c in COLUMNS}
    return out


def method_and_ratio(params: Dict[str, str]) -> (str, Optional[float]):
    selection = params.get("selection", "?")
    if selection == "none":
        return FULL, None
    return selection, float(params["ratio"]) if "ratio" in params else None


def table1(run_dirs: List[str]) -> str:
    """The table as text; runs without benchmark results are listed as such at the end."""
    rows: Dict[str, Dict[str, Dict[Optional[float], dict]]] = {}
    empty = []
    for run_dir in run_dirs:
        results = run_results(run_dir)
        if not results:
            empty.append(run_dir)
        method, ratio = method_and_ratio(read_params(run_dir))
        for benchmark, metrics in results.items():
            rows.setdefault(benchmark, {}).setdefault(method, {})[ratio] = metrics
    lines = []
    for benchmark in sorted(rows, key=lambda b: list(TITLES).index(b) if b in TITLES else len(TITLES)):
        methods = rows[benchmark]
        ratios = sorted({r for by_ratio in methods.values() for r in by_ratio}, key=lambda r: (r is None, r or 0))
        groups = ["full" if r is None else f"r = {r:g}" for r in ratios]
        width = 7 * len(COLUMNS)
        lines.append(TITLES.get(benchmark, benchmark))
        lines.append(f"{'':16}" + "".join(f"|{g:^{width - 1}}" for g in groups))
        lines.append(f"{'method':16}" + "".join(f"{c:>7}" for _ in groups for c in COLUMNS))
        order = sorted(methods, key=lambda m: (m != FULL, m))
        for method in order:
            cells = []
            for r in ratios:
                metrics = methods[method].get(r)
                cells += [f"{metrics[c]:7.2f}" if metrics else f"{'-':>7}" for c in COLUMNS]
            lines.append(f"{method:16}" + "".join(cells))
        lines.append("")
    if empty:
        lines.append("No benchmark results (run `open-clip-dissect eval --benchmark ...`): " + ", ".join(empty))
    return "\n".join(lines).rstrip("\n")
