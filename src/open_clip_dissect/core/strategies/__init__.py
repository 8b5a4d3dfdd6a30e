"""Selection strategies: pure tensor code, no OpenCLIP, no argparse, no files.

A strategy turns the per-sample measurements of one candidate batch (``BatchScores``) and, where
it needs one, the per-sample history into a ``Decision`` (the kept samples, and what to store).
Each strategy is one class registered by name with the options it takes (``registry``); a
training loop uses it through ``core.Selector.step``. Adding one takes its module in this folder
and its test (CONTRIBUTING.md, "Adding a strategy").
"""

from open_clip_dissect.core.strategies.base import (
    BatchScores,
    Decision,
    History,
    Strategy,
    batch_ranks,
    clipscore,
    contrastive_gradient,
    infonce_directions,
    keep_at_least_one,
    num_kept,
    per_sample_infonce,
    select_topk,
    uniform,
)
from open_clip_dissect.core.strategies.registry import (
    RUN_EPOCHS,
    Option,
    all_options,
    create_strategy,
    declarations,
    list_strategies,
    register,
    strategy_class,
    strategy_table,
)


def _import_strategy_modules() -> None:
    """Import every module of this package: a strategy registers itself when its module is
    imported, so adding one needs its file only (the order of --selection's choices is each
    class's ``listing_order``)."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module not in ("base", "registry"):
            importlib.import_module(f"{__name__}.{module}")


_import_strategy_modules()
from open_clip_dissect.core.strategies.dissect import DissectMomentum, DissectWarmup  # noqa: E402
from open_clip_dissect.core.strategies.divbs import DivBS  # noqa: E402
from open_clip_dissect.core.strategies.infobatch import InfoBatch  # noqa: E402
from open_clip_dissect.core.strategies.oracle import Learnability, OracleClipScore  # noqa: E402
from open_clip_dissect.core.strategies.scan import Scan  # noqa: E402
from open_clip_dissect.core.strategies.simple import BigLoss, RandomSelection, SelfClipScore, SmallLoss  # noqa: E402
