"""Selection strategies: pure tensor code, no OpenCLIP, no argparse, no files.

A strategy turns the per-sample measurements of one candidate batch (``BatchScores``) and, where
it needs one, the per-sample history into a ``Decision`` (the kept samples, and what to store).
Each strategy is one class registered by name with the options it takes (``registry``); a
training loop uses it through ``core.Selector.step``. Adding one: see the README, "Adding a
strategy".
"""
from open_clip_dissect.core.strategies.base import (BatchScores, Decision, History, Strategy, batch_ranks,
                                                    clipscore, contrastive_gradient, infonce_directions,
                                                    keep_at_least_one, num_kept, per_sample_infonce,
                                                    select_topk, uniform)
from open_clip_dissect.core.strategies.registry import (RUN_EPOCHS, Option, all_options, create_strategy,
                                                        list_strategies, register, strategy_class)

# The built-in strategies register themselves on import, in this order (--selection's choices).
from open_clip_dissect.core.strategies import simple, dissect, infobatch, scan, divbs, oracle  # noqa: E402,F401,I001
from open_clip_dissect.core.strategies.dissect import DissectMomentum, DissectWarmup  # noqa: E402
from open_clip_dissect.core.strategies.divbs import DivBS  # noqa: E402
from open_clip_dissect.core.strategies.infobatch import InfoBatch  # noqa: E402
from open_clip_dissect.core.strategies.oracle import Learnability, OracleClipScore  # noqa: E402
from open_clip_dissect.core.strategies.scan import Scan  # noqa: E402
from open_clip_dissect.core.strategies.simple import BigLoss, RandomSelection, SelfClipScore, SmallLoss  # noqa: E402
