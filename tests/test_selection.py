"""The selection adapter in-process: scoring pass side effects, NaN handling, state files."""

import open_clip
import pytest
import torch

from open_clip_dissect.core import strategies
from open_clip_dissect.core.epoch_decisions import EpochDecisions
from open_clip_dissect.core.history import hash_keys
from open_clip_dissect.core.selector import Selector
from open_clip_dissect.core.types import BatchScores
from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.state.state_files import restore_selector, save_state, state_files, state_path
from open_clip_dissect.openclip.training.selecting_loader import LoaderConfig, SelectingLoader


class ListLoader(list):
    num_batches = 2
    num_samples = 16


def _config(**kw):
    return LoaderConfig(**{"selection": "dissect-mome", "candidates": 8, "log_every_n_steps": 1, **kw})


def _batches(n=2, size=8, image_size=32):
    tok = open_clip.get_tokenizer("dissect-rn-tiny")
    g = torch.Generator().manual_seed(0)
    return ListLoader(
        (
            torch.randn(size, 3, image_size, image_size, generator=g),
            tok([f"caption {b} {i}" for i in range(size)]),
            [f"s{b}-{i}" for i in range(size)],
            hash_keys([f"s{b}-{i}" for i in range(size)]),
            torch.tensor([i % 2 for i in range(size)], dtype=torch.int8),
        )
        for b in range(n)
    )


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_scoring_pass_leaves_batchnorm_statistics_and_mode_alone(mode):
    model = open_clip.create_model("dissect-rn-tiny", output_dict=True)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    selector = Selector(strategies.create_strategy("dissect-mome"), ratio=0.5)
    loader = SelectingLoader(
        _batches(), selector, model, _config(scoring_mode=mode), epoch=0, record=EpochDecisions(keep_keys=True)
    )
    out = list(loader)
    assert [len(images) for images, _ in out] == [4, 4] and loader.num_samples == 8
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    assert len(selector.store) == 16
    cols = loader.record.columns()
    assert int(cols["kept"].sum()) == 8 and loader.record.keys[:2] == ["s0-0", "s0-1"]


def test_train_scoring_mode_normalises_with_the_batch_statistics():
    """``train`` scores as the model trains (BatchNorm on the candidate batch's statistics),
    ``eval`` with the running statistics; either way the model's mode and buffers stay."""
    from open_clip_dissect.core.scorer import Scorer

    torch.manual_seed(0)
    model = open_clip.create_model("dissect-rn-tiny", output_dict=True).eval()
    images, texts = _batches(n=1)[0][:2]
    images = images * 3 + 1  # far from the initial running statistics (mean 0, var 1)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    scored = {mode: Scorer(model, mode=mode)(images, texts) for mode in ("eval", "train")}
    assert not model.training and all(torch.equal(buffers[k], v) for k, v in model.named_buffers())
    reference = {}
    for mode in ("eval", "train"):
        copy = open_clip.create_model("dissect-rn-tiny", output_dict=True)
        copy.load_state_dict(model.state_dict())
        copy.train(mode == "train")
        with torch.no_grad():
            reference[mode] = copy.encode_image(images, normalize=True)
        assert torch.allclose(scored[mode].image, reference[mode], atol=1e-6)
    assert not torch.allclose(scored["eval"].image, scored["train"].image, atol=1e-3)
    with pytest.raises(InputError, match="--selection-scoring-mode"):
        Scorer(model, mode="batch")


def test_fixed_mode_trains_the_asked_batch_size():
    model = open_clip.create_model("dissect-vit-tiny", output_dict=True)
    selector = Selector(strategies.create_strategy("clipscore"), ratio=0.5, batch_mode="fixed", train_batch_size=4)
    loader = SelectingLoader(_batches(size=8), selector, model, _config(), 0, EpochDecisions())
    assert [len(images) for images, _ in loader] == [4, 4]


class NaNModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(1.0))

    def encode_image(self, images, normalize=True):
        out = torch.ones(len(images), 4)
        out[3] = float("nan")
        return out

    def encode_text(self, texts, normalize=True):
        return torch.ones(len(texts), 4)


def test_nan_score_fails_with_step_and_key():
    selector = Selector(strategies.create_strategy("clipscore"), ratio=0.5)
    loader = SelectingLoader(_batches(), selector, NaNModel(), _config(selection="clipscore"), 0, EpochDecisions())
    with pytest.raises(FloatingPointError, match=r"sample s0-3 \(step 0, batch 0\)"):
        list(loader)


class CountingModel(NaNModel):
    """Finite embeddings, and a count of the scoring passes."""

    passes = 0

    def encode_image(self, images, normalize=True):
        CountingModel.passes += 1
        return torch.nn.functional.normalize(torch.randn(len(images), 4), dim=1)


@pytest.mark.parametrize(
    "selection, recording, passes", [("random", False, 0), ("random", True, 2), ("clipscore", False, 2)]
)
def test_random_runs_no_scoring_pass_unless_the_run_records_scores(selection, recording, passes, caplog):
    """random reads no score: without --selection-record no scoring pass runs; with it, every
    batch is scored for the records; a strategy that reads scores always scores."""
    CountingModel.passes = 0
    selector = Selector(strategies.create_strategy(selection), ratio=0.5)
    config = _config(selection=selection, record_scores=recording)
    loader = SelectingLoader(_batches(), selector, CountingModel(), config, 0, EpochDecisions(keep_keys=recording))
    with caplog.at_level("INFO", logger="open_clip_dissect.openclip.training.selecting_loader"):
        assert [len(images) for images, _ in loader] == [4, 4]
    assert CountingModel.passes == passes and loader.trained == 8
    assert selector.end_epoch() is None and selector.last_signals.candidates == 16  # counted either way
    signals, curr = selector.last_signals, loader.record.columns()["curr"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    if passes:
        assert not torch.isnan(curr).any() and signals.clipscore_std > 0 and "| curr " in logged
    else:  # nothing measured: no CLIPScore in the records, the epoch's signals or the log
        assert torch.isnan(curr).all() and signals.clipscore_mean is None and signals.clipscore_std is None
        assert "| no scoring pass |" in logged
        with pytest.raises(ValueError, match="'clipscore' reads scores"):  # only for those that read none
            Selector(strategies.create_strategy("clipscore")).decide(
                hash_keys(["a"]), BatchScores.unmeasured(1, "cpu"), 0
            )


def test_state_files_are_atomic_and_not_pt(tmp_path):
    path = state_path(str(tmp_path / "checkpoints" / "epoch_3.pt"))
    assert path.endswith("epoch_3.dissect-state") and not path.endswith(".pt")
    selector = Selector(strategies.create_strategy("dissect-mome"), ratio=0.5)
    written = save_state(path, selector.state_dict())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_3.dissect-state.rank0-of-1"]
    assert state_files(path) == [written]
    other = Selector(strategies.create_strategy("dissect-warmup"), ratio=0.5)
    with pytest.raises(InputError, match="strategy 'dissect-mome'"):
        restore_selector(other, state_files(path), rank=0)
    with pytest.raises(InputError, match="no selection state"):
        state_files(str(tmp_path / "missing.dissect-state"))


def test_a_run_that_records_scores_every_batch_whatever_the_strategy(tmp_path):
    from open_clip_dissect.openclip.launch import params

    for extra, recorded in (([], False), (["--selection-record", str(tmp_path / "rec")], True)):
        args = params.parse_args(["--selection", "random", *extra])
        args.selection_candidates, args.device, args.rank, args.world_size = 8, "cpu", 0, 1  # set by main
        assert LoaderConfig.from_args(args).record_scores is recorded


def test_the_python_api_names_a_bad_argument():
    """docs/python-api.md: a wrong type or shape is one error naming the argument, not an error
    from deep inside torch."""
    import numpy as np

    dissect = strategies.create_strategy("dissect-mome")
    with pytest.raises(TypeError, match="ratio must be a number, got str '0.5'"):
        Selector(dissect, ratio="0.5")
    with pytest.raises(TypeError, match="clipscore_scale must be a number"):
        Selector(dissect, clipscore_scale="100")
    selector = Selector(dissect, ratio=0.5, seed=0)
    image, text, scale = torch.randn(4, 8), torch.randn(4, 8), torch.tensor(10.0)
    with pytest.raises(ValueError, match="^keys: 3 of them for a batch of 4 samples"):
        selector.step(["a", "b", "c"], image, text, scale, 0)
    with pytest.raises(TypeError, match="^image_features must be a torch.Tensor, got numpy.ndarray"):
        selector.step(list("abcd"), image.numpy(), text, scale, 0)
    with pytest.raises(ValueError, match="^image_features .* and text_features .* must have the same shape"):
        selector.step(list("abcd"), image, torch.randn(4, 6), scale, 0)
    with pytest.raises(TypeError, match="^epoch must be an int, got float"):
        selector.step(list("abcd"), image, text, scale, 1.5)
    selector.step(list("abcd"), image, text, scale, 3)
    selector.step(list("abcd"), image, text, scale, 3)  # the same epoch again: fine
    with pytest.raises(ValueError, match="^epoch 1 comes after epoch 3"):
        selector.step(list("abcd"), image, text, scale, 1)
    selector.step(list("abcd"), image, text, scale, np.int64(4))
