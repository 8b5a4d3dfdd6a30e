"""Every ```python block of the README, CONTRIBUTING.md and docs/ runs as written (so the docs
cannot drift from the API): "One call in your own training loop" (docs/python-api.md) for every
registered strategy that needs no oracle, and "Adding a strategy" (CONTRIBUTING.md)."""

import glob
import os
import re

import pytest
from conftest import REPO

from open_clip_dissect.core import Selector, create_strategy, list_strategies
from open_clip_dissect.core.strategies import registry, strategy_class

ONE_CALL = ("docs/python-api.md", "One call in your own training loop")
ADDING = ("CONTRIBUTING.md", "Adding a strategy")
DOCS = [
    "README.md",
    "CONTRIBUTING.md",
    *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)),
]


def _python_blocks() -> dict:
    """``{(doc, section heading): code}`` of every ```python block."""
    blocks = {}
    for doc in DOCS:
        with open(os.path.join(REPO, doc)) as f:
            text = f.read()
        for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            heading = re.findall(r"^#+ (.+)$", text[: match.start()], flags=re.M)[-1]
            assert (doc, heading) not in blocks, f"two python blocks under {heading!r} in {doc}: give each a test"
            blocks[(doc, heading)] = match.group(1)
    return blocks


def test_every_python_block_has_a_test():
    assert set(_python_blocks()) == {ONE_CALL, ADDING}


@pytest.mark.parametrize("name", [n for n in list_strategies() if not strategy_class(n).needs_oracle])
def test_one_call_block_runs_as_written(name):
    code = _python_blocks()[ONE_CALL]
    assert '"dissect-mome"' in code
    namespace = {"__name__": "docs"}  # nothing defined beforehand: the block is complete
    exec(compile(code.replace('"dissect-mome"', repr(name)), ONE_CALL[0], "exec"), namespace)
    decision, out = namespace["decision"], namespace["out"]
    assert len(decision.kept) >= 1 and out["image_features"].shape[0] == len(decision.kept)
    assert namespace["selector"].epoch == namespace["epochs"] - 1


def test_adding_a_strategy_block_runs_as_written(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the registration is undone
    exec(compile(_python_blocks()[ADDING], ADDING[0], "exec"), {"__name__": "docs"})
    assert "margin" in registry._REGISTRY
    selector = Selector(create_strategy("margin", floor=20.0), ratio=0.5, seed=0)
    assert selector.strategy.floor == 20.0
