"""The selection core: pure tensor code (torch and numpy), no OpenCLIP, no argparse, no files
beyond key lists. Any training loop uses it through one call::

    selector = Selector(create_strategy("dissect-mome"), ratio=0.5, seed=0)
    decision = selector.step(keys, image_features, text_features, logit_scale, epoch)
"""

from open_clip_dissect.core.history import HistoryStore, hash_keys
from open_clip_dissect.core.scorer import Features, Scorer
from open_clip_dissect.core.selector import Selector
from open_clip_dissect.core.strategies import (
    BatchScores,
    Decision,
    Option,
    Strategy,
    create_strategy,
    list_strategies,
    register,
)
from open_clip_dissect.core.types import OracleFeatures

__all__ = [
    "BatchScores",
    "Decision",
    "Features",
    "HistoryStore",
    "Option",
    "OracleFeatures",
    "Scorer",
    "Selector",
    "Strategy",
    "create_strategy",
    "hash_keys",
    "list_strategies",
    "register",
]
