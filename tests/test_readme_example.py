"""Every ```python block of the README runs as written (so the README cannot drift from the API):
"One call in your own training loop" for every registered strategy that needs no oracle, and
"Adding a strategy"."""

import os
import re

import pytest
from conftest import REPO

from open_clip_dissect.core import Selector, create_strategy, list_strategies
from open_clip_dissect.core.strategies import registry, strategy_class

ONE_CALL = "One call in your own training loop"
ADDING = "Adding a strategy"


def _python_blocks() -> dict:
    """``{section heading: code}`` of every ```python block."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    blocks = {}
    for match in re.finditer(r"^```python\n(.*?)^```", readme, flags=re.S | re.M):
        heading = re.findall(r"^#+ (.+)$", readme[: match.start()], flags=re.M)[-1]
        assert heading not in blocks, f"two python blocks under {heading!r}: give each a test"
        blocks[heading] = match.group(1)
    return blocks


def test_every_python_block_has_a_test():
    assert set(_python_blocks()) == {ONE_CALL, ADDING}


@pytest.mark.parametrize("name", [n for n in list_strategies() if not strategy_class(n).needs_oracle])
def test_one_call_block_runs_as_written(name):
    code = _python_blocks()[ONE_CALL]
    assert '"dissect-mome"' in code
    namespace = {"__name__": "readme"}  # nothing defined beforehand: the block is complete
    exec(compile(code.replace('"dissect-mome"', repr(name)), "README.md", "exec"), namespace)
    decision, out = namespace["decision"], namespace["out"]
    assert len(decision.kept) >= 1 and out["image_features"].shape[0] == len(decision.kept)
    assert namespace["selector"].epoch == namespace["epochs"] - 1


def test_adding_a_strategy_block_runs_as_written(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the registration is undone
    exec(compile(_python_blocks()[ADDING], "README.md", "exec"), {"__name__": "readme"})
    assert "margin" in registry._REGISTRY
    selector = Selector(create_strategy("margin", floor=20.0), ratio=0.5, seed=0)
    assert selector.strategy.floor == 20.0
