"""The flag merge: our group on OpenCLIP's parser, nothing patched outside our entry point."""
import subprocess
import sys

import open_clip_train.main as upstream_main
import open_clip_train.params as upstream_params
import pytest

from open_clip_dissect import params
from open_clip_dissect.main import patched_open_clip_train

from conftest import run_module


def test_our_flags_and_openclip_flags_parse_together():
    args = params.parse_args(["--batch-size", "7", "--model", "RN50", "--selection", "none",
                              "--csv-key-key", "uid", "--dataset-type", "csv"])
    assert args.batch_size == 7 and args.model == "RN50"
    assert args.selection == "none" and args.csv_key_key == "uid"
    # OpenCLIP's own post-processing still runs (per-model optimizer defaults).
    assert args.lr == 5.0e-4 and args.beta2 == 0.999


def test_defaults():
    args = params.parse_args([])
    assert args.selection == "none" and args.sample_key == "url+key" and args.csv_key_key is None
    assert (args.ratio, args.selection_batch_mode, args.clipscore_scale) == (0.5, "shrink", 100.0)
    assert (args.dissect_warmup_epochs, args.dissect_momentum) == (5, 0.9)


@pytest.mark.parametrize("argv, flag", [
    (["--ratio", "0"], "--ratio"), (["--ratio", "1.5"], "--ratio"),
    (["--dissect-momentum", "1"], "--dissect-momentum"), (["--dissect-momentum", "-0.1"], "--dissect-momentum"),
    (["--dissect-warmup-epochs", "-1"], "--dissect-warmup-epochs"), (["--clipscore-scale", "0"], "--clipscore-scale"),
])
def test_bad_selection_values_name_the_flag(argv, flag):
    with pytest.raises(SystemExit, match=flag):
        params.parse_args(argv)


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--selection", "bogus"], ["--batch-size", "x"]])
def test_bad_flags_are_rejected(argv, capsys):
    with pytest.raises(SystemExit):
        params.parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_csv_key_key_needs_csv():
    with pytest.raises(SystemExit, match="--csv-key-key"):
        params.parse_args(["--csv-key-key", "uid", "--dataset-type", "webdataset"])


def test_upstream_parser_is_left_alone():
    params.parse_args(["--selection", "none"])
    with pytest.raises(SystemExit):  # our flags never leak into OpenCLIP's own parser
        upstream_params.parse_args(["--selection", "none"])


def test_entry_point_patches_are_scoped():
    stock = upstream_main.train_one_epoch, upstream_main.get_data, upstream_main.parse_args
    with patched_open_clip_train():
        assert upstream_main.parse_args is params.parse_args
    assert (upstream_main.train_one_epoch, upstream_main.get_data, upstream_main.parse_args) == stock


def test_import_patches_nothing():
    code = ("import open_clip_train.main as m, open_clip_train.train as t, open_clip_train.data as d;"
            "before = (m.train_one_epoch, m.get_data, m.parse_args, d.CsvDataset);"
            "import open_clip_dissect, open_clip_dissect.main, open_clip, torch.utils.data as tud;"
            "assert (m.train_one_epoch, m.get_data, m.parse_args, d.CsvDataset) == before;"
            "assert 'dissect-vit-tiny' in open_clip.list_models() and 'RN50' in open_clip.list_models()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_lists_both_groups():
    result = run_module("open_clip_dissect.main", ["--help"])
    assert result.returncode == 0
    for flag in ("--train-data", "--accum-freq", "--selection", "--sample-key", "--csv-key-key",
                 "--ratio", "--selection-batch-mode", "--dissect-momentum", "--selection-record"):
        assert flag in result.stdout
    assert "open_clip_dissect:" in result.stdout and "(default: none)" in result.stdout
