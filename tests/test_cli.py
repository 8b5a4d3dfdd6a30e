"""The flag merge: our group on OpenCLIP's parser, nothing patched outside our entry point."""

import subprocess
import sys

import open_clip_train.main as upstream_main
import open_clip_train.params as upstream_params
import pytest
import torch
from conftest import run_module

from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.launch import params
from open_clip_dissect.openclip.launch.main import patched_open_clip_train


def test_our_flags_and_openclip_flags_parse_together():
    args = params.parse_args(
        ["--batch-size", "7", "--model", "RN50", "--selection", "none", "--csv-key-key", "uid", "--dataset-type", "csv"]
    )
    assert args.batch_size == 7 and args.model == "RN50"
    assert args.selection == "none" and args.csv_key_key == "uid"
    # OpenCLIP's own post-processing still runs (per-model optimizer defaults).
    assert args.lr == 5.0e-4 and args.beta2 == 0.999


def test_defaults():
    args = params.parse_args([])
    assert args.selection == "none" and args.sample_key == "url+key" and args.csv_key_key is None
    assert (args.ratio, args.selection_batch_mode, args.clipscore_scale) == (0.5, "shrink", 100.0)
    assert (args.dissect_warmup_epochs, args.dissect_momentum) == (5, 0.9)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--ratio", "0"], "--ratio"),
        (["--ratio", "1.5"], "--ratio"),
        (["--dissect-momentum", "1"], "--dissect-momentum"),
        (["--dissect-momentum", "-0.1"], "--dissect-momentum"),
        (["--dissect-warmup-epochs", "-1"], "--dissect-warmup-epochs"),
        (["--clipscore-scale", "0"], "--clipscore-scale"),
    ],
)
def test_bad_selection_values_name_the_flag(argv, flag):
    with pytest.raises(InputError, match=flag):
        params.parse_args(argv)


def test_the_default_auto_signal_watches_val_data_never_a_reported_split(tmp_path):
    auto = ["--selection", "dissect-warmup", "--dissect-warmup-epochs", "auto"]
    assert params.parse_args([]).dissect_auto_signal == "retrieval"
    with pytest.raises(InputError, match="^--val-data: needed .*'retrieval' \\(the default\\).*spread or loss"):
        params.parse_args(auto)
    assert params.parse_args(auto + ["--dissect-auto-signal", "spread"]).dissect_warmup_epochs == "auto"
    held_out = str(tmp_path / "test.tar")
    open(held_out, "wb").close()
    # --retrieval-data is reported: the detector must not choose its epoch by looking at it.
    with pytest.raises(InputError, match="--val-data.*never watches --retrieval-data"):
        params.parse_args(auto + ["--retrieval-data", held_out])
    assert params.parse_args(auto + ["--val-data", held_out]).dissect_auto_signal == "retrieval"
    with pytest.raises(InputError, match="^--val-frequency: must be > 0 .*--dissect-auto-signal"):
        params.parse_args(auto + ["--val-data", held_out, "--val-frequency", "0"])


@pytest.mark.parametrize(
    "argv, candidates",
    [
        (["--selection", "random"], 64),
        (["--selection", "random", "--selection-batch-mode", "fixed"], 128),
        (["--selection", "random", "--selection-batch-mode", "fixed", "--ratio", "0.3"], 214),
        (["--selection", "observe", "--selection-batch-mode", "fixed"], 64),  # trains on all: B, not B / r
        (["--selection", "none", "--selection-batch-mode", "fixed"], 64),
    ],
)
def test_candidates_per_step(argv, candidates):
    from open_clip_dissect.openclip.training.train import candidates_per_step

    assert candidates_per_step(params.parse_args(["--batch-size", "64"] + argv)) == candidates


def test_the_entry_point_reports_a_bad_value_in_one_line():
    result = run_module("open_clip_dissect.main", ["--selection", "dissect-mome", "--dissect-momentum", "1"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "open_clip_dissect: error: --dissect-momentum: must be in [0.0, 1.0), got 1.0"
    )


def test_a_flag_the_strategy_does_not_read_is_reported(caplog):
    with caplog.at_level("WARNING"):
        params.parse_args(["--selection", "random", "--dissect-momentum", "0.5", "--scan-nominate", "0.2"])
    assert "--selection random does not read --dissect-momentum, --scan-nominate" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # given or not is known, not guessed from the default value
        params.parse_args(["--selection", "infobatch", "--ratio", "0.5"])
    assert "ignores --ratio" in caplog.text


def test_scoring_flags_of_a_run_without_a_scoring_pass_are_reported(caplog, tmp_path):
    flags = ["--selection", "random", "--clipscore-scale", "50", "--selection-scoring-mode", "train"]
    with caplog.at_level("WARNING"):
        params.parse_args(flags)
    assert "random runs no scoring pass without --selection-record: --selection-scoring-mode, --clipscore-scale" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING"):  # recorded: scored, so both are read
        params.parse_args(flags + ["--selection-record", str(tmp_path / "rec")])
        params.parse_args(["--selection", "clipscore", "--clipscore-scale", "50"])
    assert "no scoring pass" not in caplog.text


def test_selection_flags_without_a_strategy_are_reported(caplog, tmp_path):
    with caplog.at_level("WARNING"):
        params.parse_args(["--ratio", "0.5", "--selection-record", str(tmp_path / "rec")])
    assert "--selection none trains as stock OpenCLIP and does not read --ratio, --selection-record" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        params.parse_args(["--selection", "random", "--ratio", "0.5", "--selection-record", str(tmp_path / "rec")])
    assert "does not read" not in caplog.text


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--selection", "bogus"], ["--batch-size", "x"]])
def test_bad_flags_are_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        params.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.endswith("(--help lists every flag)\n")
    assert err.startswith(f"open_clip_dissect: error: {'unrecognized' if argv[0] == '--no-such-flag' else 'argument'}")


def test_csv_key_key_needs_csv():
    with pytest.raises(InputError, match="--csv-key-key"):
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
    code = (
        "import open_clip_train.main as m, open_clip_train.train as t, open_clip_train.data as d;"
        "before = (m.train_one_epoch, m.get_data, m.parse_args, d.CsvDataset);"
        "import open_clip_dissect, open_clip_dissect.main, open_clip, torch.utils.data as tud;"
        "assert (m.train_one_epoch, m.get_data, m.parse_args, d.CsvDataset) == before;"
        "assert 'dissect-vit-tiny' not in open_clip.list_models();"  # the entry points register it
        "from open_clip_dissect.openclip.models.configs import register_model_configs as r; r(); r();"
        "assert 'dissect-vit-tiny' in open_clip.list_models() and 'RN50' in open_clip.list_models()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_imports_no_openclip():
    code = (
        "import sys, open_clip_dissect.core, open_clip_dissect.core.selector, "
        "open_clip_dissect.core.strategies, open_clip_dissect.core.history, open_clip_dissect.core.audit, "
        "open_clip_dissect.core.keyset, open_clip_dissect.core.epoch_decisions, open_clip_dissect.core.oracle_scores;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('open_clip', 'open_clip_train', 'pandas', 'matplotlib'));"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_lists_both_groups():
    result = run_module("open_clip_dissect.main", ["--help"])
    assert result.returncode == 0
    for flag in (
        "--train-data",
        "--accum-freq",
        "--selection",
        "--sample-key",
        "--csv-key-key",
        "--ratio",
        "--selection-batch-mode",
        "--dissect-momentum",
        "--selection-record",
    ):
        assert flag in result.stdout
    assert "open_clip_dissect:" in result.stdout and "(default: none)" in result.stdout


def test_a_flag_the_settings_ignore_is_named_in_a_warning(caplog):
    with caplog.at_level("WARNING"):
        params.parse_args(
            [
                "--selection",
                "dissect-mome",
                "--dissect-mome-warmup-epochs",
                "2",
                "--dissect-auto-signal",
                "spread",
                "--precision",
                "fp32",
            ]
        )
    assert "--selection dissect-mome ignores --dissect-auto-signal with these settings" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        params.parse_args(
            [
                "--selection",
                "dissect-mome",
                "--dissect-mome-warmup-epochs",
                "auto",
                "--dissect-auto-signal",
                "spread",
                "--precision",
                "fp32",
            ]
        )
    assert "ignores" not in caplog.text


def test_the_table_reads_an_epoch_latest_evaluation(tmp_path):
    import json

    from open_clip_dissect.openclip.evaluation.benchmark_table import run_results

    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)

    def metrics(rsum):  # an `eval --benchmark` JSON has a number for every column of the table
        return {"IR@1": 1.0, "IR@10": 2.0, "TR@1": 3.0, "TR@10": 4.0, "R@sum": rsum}

    (checkpoints / "epoch_3.mscoco_captions.json").write_text(json.dumps(metrics(10.0)))
    (checkpoints / "epoch_latest.mscoco_captions.json").write_text(json.dumps(metrics(30.0)))
    (checkpoints / "epoch_2.flickr30k.json").write_text(json.dumps(metrics(5.0)))
    assert run_results(str(tmp_path / "run")) == {"mscoco_captions": metrics(30.0), "flickr30k": metrics(5.0)}


def test_a_key_list_that_is_not_text_is_refused_naming_the_flag(tmp_path):
    from open_clip_dissect.core.keyset import KeySet, check_key_file

    binary = tmp_path / "keys.bin"
    binary.write_bytes(b"PK\x03\x04" + bytes(100))
    for read in (check_key_file, KeySet.from_file):
        with pytest.raises(InputError, match="--noisy-keys: .*keys.bin is not a text file"):
            read(str(binary), "--noisy-keys")
    text = tmp_path / "keys.txt"
    text.write_text("a/00000.tar/00000001\n" * 7 + "é\n", encoding="utf-8")  # "é" is cut by a 160-byte probe
    check_key_file(str(text), "--noisy-keys", probe=len("a/00000.tar/00000001\n") * 7 + 1)
    assert len(KeySet.from_file(str(text), "--noisy-keys")) == 2


def test_logging_set_up_leaves_torch_at_warning_and_ours_at_the_level():
    """(else torch prints TorchDynamo statistics at the exit of every run)"""
    import logging

    from open_clip_dissect.openclip.launch.main import setup_logging

    dynamo = logging.getLogger("torch._dynamo")
    ours = logging.getLogger("open_clip_dissect.test")
    handlers, levels = list(logging.root.handlers), (logging.root.level, dynamo.level, ours.level)
    try:
        setup_logging(None, logging.INFO)
        assert not dynamo.isEnabledFor(logging.INFO) and dynamo.isEnabledFor(logging.WARNING)
        assert ours.isEnabledFor(logging.INFO)
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(levels[0])
        dynamo.setLevel(levels[1])
        ours.setLevel(levels[2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is for CPU runs")
def test_the_cpu_amp_warning_comes_only_once_the_inputs_are_good(tmp_path, caplog):
    """OpenCLIP's default precision, amp, is slow on CPU: a run is warned; a bad input's one-line
    error stands alone."""
    missing = run_module(
        "open_clip_dissect.main",
        ["--train-data", str(tmp_path / "{00000..00001}.tar"), "--dataset-type", "webdataset", "--logs", str(tmp_path)],
    )
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"open_clip_dissect: error: --train-data: shard not found: {tmp_path / '00000.tar'} (and 1 more)"
    ]
    with caplog.at_level("WARNING"):
        params.warn_slow_settings(params.parse_args([]))
    assert "--precision amp on a CPU device" in caplog.text


@pytest.mark.parametrize("command", ["make-data", "summary", "eval", "embed", "score", "filter"])
def test_every_command_reports_a_parsing_error_in_one_line(command, capsys):
    from open_clip_dissect import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--no-such-flag"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"open-clip-dissect {command}: error: ") and "usage" not in err


@pytest.mark.parametrize(
    "argv, kept",
    [
        (["--selection", "random", "--batch-size", "1", "--ratio", "0.3"], 1),
        (["--selection", "dissect-mome", "--batch-size", "4", "--ratio", "0.3"], 1),  # round(1.2)
        (["--selection", "random", "--batch-size", "1", "--selection-batch-mode", "fixed"], 1),
    ],
)
def test_a_step_that_keeps_one_pair_is_refused(argv, kept):
    """One kept pair has no negative: its contrastive loss is 0, and the run would learn nothing."""
    with pytest.raises(InputError, match=f"^--batch-size: .*{kept} pair.*at least 2"):
        params.parse_args(argv)
    params.parse_args(["--selection", "random", "--batch-size", "5", "--ratio", "0.3"])  # round(1.5) = 2
    params.parse_args(["--selection", "none", "--batch-size", "1"])  # stock OpenCLIP: not ours to refuse
    # The batch to suggest is computed, however small the ratio (no search that could run out)
    with pytest.raises(InputError, match="use --batch-size 15000000 or more"):
        params.parse_args(["--selection", "random", "--batch-size", "1", "--ratio", "1e-7"])


def _finished_run(folder, epochs, selection, history_sizes, warmup_from=None, picture=True):
    """A run folder as a training run leaves it: results, selection records, params.txt."""
    import json

    (folder / "checkpoints").mkdir(parents=True)
    recalls = {f"retrieval_{c}": 1.0 for c in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "R@sum")}
    (folder / "checkpoints" / "results.jsonl").write_text(
        "".join(json.dumps({"epoch": e, **recalls}) + "\n" for e in range(1, epochs + 1))
    )
    records = []
    for e, size in zip(range(1, epochs + 1), history_sizes):
        record = {"epoch": e, "selection": selection, "candidates": 100, "kept": 50, "history_size": size}
        record.update(audit_kept_precision=0.6, audit_random_precision=0.6, audit_auroc=0.5)
        if warmup_from is not None:
            record["selection_from_epoch"] = warmup_from
        records.append(json.dumps(record) + "\n")
    (folder / "selection.jsonl").write_text("".join(records))
    (folder / "record").mkdir()
    if picture:
        (folder / "record" / "distributions.png").write_bytes(b"png")
    (folder / "params.txt").write_text(f"selection: {selection}\nselection_record: {folder / 'record'}\n")


def test_summary_says_when_the_history_has_not_started_and_where_the_picture_is(tmp_path, capsys):
    from open_clip_dissect import cli

    run = tmp_path / "one-epoch"
    _finished_run(run, 1, "dissect-mome", [100])
    assert cli.main(["summary", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no history yet" in out and "0.600" not in out  # no random audit shown as a result
    assert "dissect-mome has not selected by its history yet in these epochs" in out
    assert f"Selection picture (score distributions, kept vs dropped): {run / 'record' / 'distributions.png'}" in out
    run = tmp_path / "three-epochs"
    _finished_run(run, 3, "dissect-warmup", [100, 100, 100], warmup_from=2, picture=False)
    assert cli.main(["summary", str(run / "checkpoints")]) == 0  # <run>/checkpoints names the run
    lines = capsys.readouterr().out.splitlines()
    [one, two, three] = lines[-3:]
    assert "no history yet" in one and "warm-up: selecting from epoch 3" in two
    assert three.rstrip().endswith("0.500") and "picture" not in "".join(lines)


@pytest.mark.slow  # a fresh interpreter
@pytest.mark.parametrize("argv", [["summary", "--help"], ["make-data", "--help"], ["summary", "nowhere"]])
def test_commands_that_train_nothing_do_not_import_open_clip(argv):
    """open_clip's import (CoCa pulls in torchvision) took 11.7 s of a 15 s ``summary --help``."""
    code = (
        "import sys\nfrom open_clip_dissect import cli\n"
        f"try:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
        "assert 'open_clip' not in sys.modules and 'torchvision' not in sys.modules, 'imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
