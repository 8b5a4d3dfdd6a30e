"""The seeded profiles, each a frozen design written as data (``PAPER``, ``WEB``, ``REAL``), and where each
one keeps its report, its cached runs and its working files.

A profile of the comparison kind (``web``, and every new one) runs through the shared machinery:
``plan`` (its runs), ``runner`` (training, the cache), ``analysis`` (paired intervals, verdicts),
``report`` and ``plots``. ``paper`` keeps its own analysis and report, frozen with it.
"""

from dataclasses import dataclass

from .paper import PAPER
from .real import REAL
from .web import WEB


@dataclass(frozen=True)
class Profile:
    """A profile's design and its folders (relative to the repository root)."""

    design: dict
    out: str  # the report: results.md, summary.json, plots
    work: str  # data sets, logs and records (not committed)
    kind: str = "comparison"  # "comparison" (shared analysis and report) or "paper" (its own, frozen)

    def cache(self, out):
        """The report's cached runs: one JSON a run, which the report reads."""
        return f"{out}/runs"

    def calibration_cache(self):
        """Where ``--calibrate`` keeps the runs it trains: never the report's cache."""
        return f"{self.work}/calibration"


PROFILES = {
    "paper": Profile(PAPER, out="bench/results/paper", work="bench/results/paper", kind="paper"),
    "web": Profile(WEB, out="docs/web_bench", work="bench/results/web"),
    "real": Profile(REAL, out="docs/real_bench", work="bench/results/real"),
}
