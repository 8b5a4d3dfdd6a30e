"""The README's "One call in your own training loop" block, run as written for every registered
strategy that needs no oracle (so the README cannot drift from the API)."""
import os
import re

import open_clip
import pytest
import torch

from open_clip_dissect.core import list_strategies
from open_clip_dissect.core.strategies import strategy_class

from conftest import REPO, TINY


def _readme_block() -> str:
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("### One call in your own training loop"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.mark.parametrize("name", [n for n in list_strategies() if not strategy_class(n).needs_oracle])
def test_readme_example_runs(name):
    code = _readme_block()
    assert '"dissect-mome"' in code
    torch.manual_seed(0)
    tokenizer = open_clip.get_tokenizer(TINY)
    loader = [(torch.randn(16, 3, 32, 32), tokenizer([f"caption {b} {i}" for i in range(16)]),
               [f"sample-{b}-{i}" for i in range(16)]) for b in range(3)]
    namespace = {"model": open_clip.create_model(TINY, output_dict=True), "loader": loader, "epochs": 2}
    exec(compile(code.replace('"dissect-mome"', repr(name)), "README.md", "exec"), namespace)
    decision, out = namespace["decision"], namespace["out"]
    assert len(decision.kept) >= 1 and out["image_features"].shape[0] == len(decision.kept)
    assert namespace["selector"].epoch == 1
