"""InputError, the one error type for bad input, keeps its type and subject wherever it is raised."""

import pickle

import pytest
import torch

from open_clip_dissect.errors import InputError


class _CutShard(torch.utils.data.Dataset):
    """A dataset whose first sample finds a bad input, as a loader worker reading a shard would."""

    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise InputError("--train-data", "shard /data/00003.tar: cut short")


def test_an_input_error_in_a_loader_worker_reaches_the_entry_point_as_itself():
    # torch re-raises a worker's exception by rebuilding it from one string, the traceback's text;
    # an InputError that could not be rebuilt so became a RuntimeError (and a traceback).
    with pytest.raises(InputError) as raised:
        next(iter(torch.utils.data.DataLoader(_CutShard(), num_workers=1)))
    assert raised.value.subject == "--train-data"
    assert str(raised.value) == "--train-data: shard /data/00003.tar: cut short"


class _TwoLineError(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise InputError("/data/train.csv", "cannot read it:\nError tokenizing data at line 3")


def test_a_worker_input_error_of_several_lines_keeps_its_subject():
    with pytest.raises(InputError) as raised:
        next(iter(torch.utils.data.DataLoader(_TwoLineError(), num_workers=1)))
    assert raised.value.subject == "/data/train.csv"
    assert str(raised.value) == "/data/train.csv: cannot read it:\nError tokenizing data at line 3"
    again = pickle.loads(pickle.dumps(raised.value))
    assert again.subject == "/data/train.csv" and str(again) == str(raised.value)


def test_an_input_error_pickles():
    again = pickle.loads(pickle.dumps(InputError("--ratio", "must be in (0, 1], got 2.0")))
    assert type(again) is InputError and again.subject == "--ratio"
    assert str(again) == "--ratio: must be in (0, 1], got 2.0"
