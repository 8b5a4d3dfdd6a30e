"""Every decision of one epoch, gathered on the device for the audit, the records and the plots."""

from dataclasses import dataclass, field
from typing import List

import torch


@dataclass
class EpochDecisions:
    """Every decision of one epoch, for the audit, the record file and the plots."""

    keep_keys: bool = False
    keys: List[str] = field(default_factory=list)
    parts: dict = field(default_factory=lambda: {n: [] for n in ("curr", "hist", "delta", "kept", "noisy")})

    def add(self, keys, curr, hist, delta, kept_mask, noisy):
        if self.keep_keys:
            self.keys.extend(keys)
        for name, value in (("curr", curr), ("hist", hist), ("delta", delta), ("kept", kept_mask), ("noisy", noisy)):
            self.parts[name].append(value.detach().to("cpu", non_blocking=True))

    def columns(self) -> dict:
        return {n: torch.cat(v) if v else torch.empty(0) for n, v in self.parts.items()}


def nan_stats(x: torch.Tensor):
    x = x[~torch.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std()) if len(x) > 1 else 0.0
