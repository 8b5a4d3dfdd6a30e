"""Every name of OpenCLIP (open_clip_torch 3.3.0) that this package uses, and the torch names it
patches: what it swaps during its own runs (``PATCHED``), what it re-creates in its own code
(``MIRRORED``) and what it only calls or reads (``READ``). A new OpenCLIP release is checked
against this one list before the pin moves: ``tests/test_upstream.py`` fails naming any name here
that the installed release lacks, and any ``open_clip``/``open_clip_train`` name the source uses
that is missing here."""

UPSTREAM_VERSION = "3.3.0"  # open_clip_torch, pinned in setup.cfg

# Swapped for the duration of ``python -m open_clip_dissect.main`` (``openclip.launch.main``) or of one
# call of ours (``openclip.pipeline.keyed_data``, ``openclip.launch.params``); never on import.
PATCHED = {
    "open_clip_train.main.parse_args": "openclip.launch.params.parse_args: OpenCLIP's flags plus ours",
    "open_clip_train.main.get_data": "openclip.training.train.TrainingSession.get_data: the key-carrying training loader",
    "open_clip_train.main.train_one_epoch": "openclip.training.train.TrainingSession.train_one_epoch: select, then upstream's loop",
    "open_clip_train.main.setup_logging": "openclip.launch.main.setup_logging: upstream's, then torch's loggers back to WARNING",
    "open_clip_train.main.torch": "openclip.state.checkpoint_files.AtomicSaveTorch: checkpoints written atomically",
    "open_clip_train.main.get_latest_checkpoint": "openclip.state.checkpoint_files.latest_complete_checkpoint: skips incomplete ones",
    "torch.nn.parallel.DistributedDataParallel": "openclip.launch.main.CpuFriendlyDDP: several processes on the CPU",
    "open_clip_train.params.argparse": "openclip.launch.params: the parser gains our argument group",
    "open_clip_train.data.wds": "openclip.pipeline.keyed_data.SafeDecodingWebdataset: the validation loader decodes by allow-list",
    "open_clip_train.data.CsvDataset": "openclip.pipeline.keyed_data.KeyedCsvDataset: rows carry their keys",
    "open_clip_train.data.SyntheticDataset": "openclip.pipeline.keyed_data.KeyedSyntheticDataset: items carry their index as key",
}

# Re-created in our code (the differences are listed where each lives).
MIRRORED = {
    "open_clip_train.data.group_by_keys_nothrow": "openclip.pipeline.keyed_data.group_by_keys_nothrow (webdataset 1.0 end-of-shard marker)",
    "open_clip_train.data.tarfile_to_samples_nothrow": "openclip.pipeline.keyed_data.tarfile_to_samples_nothrow (allow-listed members)",
    "open_clip_train.data.get_wds_dataset": "openclip.pipeline.keyed_data.get_keyed_wds_dataset (its training branch)",
    "open_clip_train.data.get_data": "openclip.pipeline.keyed_data.get_data",
    "open_clip_train.params.parse_args": "openclip.launch.params.parse_args",
    "open_clip_train.train.train_one_epoch": "openclip.training.train.TrainingSession.train_one_epoch (its signature)",
}

# Called or read as they are (where, in brackets).
READ = {
    "open_clip.add_model_config": "models.configs (registers the tiny configs)",
    "open_clip.create_model_and_transforms": "models.frozen",
    "open_clip.get_input_dtype": "training, evaluation, offline embeddings, cli",
    "open_clip.get_pretrained_cfg": "launch.run_attempt (checks --pretrained before a run)",
    "open_clip.get_tokenizer": "models.frozen",
    "open_clip.list_models": "launch.run_attempt, models.configs",
    "open_clip.list_pretrained_tags_by_model": "launch.run_attempt",
    "open_clip.load_checkpoint": "models.frozen",
    "open_clip.loss.ClipLoss": "training.train, training.weighted_loss (subclassed)",
    "open_clip_train.data.DataInfo": "pipeline.keyed_data",
    "open_clip_train.data.ResampledShards2": "pipeline.keyed_data",
    "open_clip_train.data.SharedEpoch": "pipeline.keyed_data",
    "open_clip_train.data._SAMPLE_SHUFFLE_INITIAL": "pipeline.keyed_data (same buffer sizes as upstream)",
    "open_clip_train.data._SAMPLE_SHUFFLE_SIZE": "pipeline.keyed_data",
    "open_clip_train.data._SHARD_SHUFFLE_INITIAL": "pipeline.keyed_data",
    "open_clip_train.data._SHARD_SHUFFLE_SIZE": "pipeline.keyed_data",
    "open_clip_train.data.detshuffle2": "pipeline.keyed_data",
    "open_clip_train.data.expand_urls": "pipeline.keyed_data",
    "open_clip_train.data.filter_no_caption_or_no_image": "pipeline.keyed_data",
    "open_clip_train.data.get_csv_dataset": "pipeline.keyed_data (wrapped)",
    "open_clip_train.data.get_dataset_fn": "pipeline.keyed_data",
    "open_clip_train.data.get_dataset_size": "pipeline.keyed_data",
    "open_clip_train.data.get_imagenet": "pipeline.keyed_data (zero-shot data, unchanged)",
    "open_clip_train.data.get_synthetic_dataset": "pipeline.keyed_data (wrapped)",
    "open_clip_train.distributed.is_using_distributed": "launch.devices",
    "open_clip_train.distributed.world_info_from_env": "launch.devices",
    "open_clip_train.logger.setup_logging": "launch.main (wrapped)",
    "open_clip_train.main.main": "launch.main (the run itself)",
    "open_clip_train.main.natural_key": "state.checkpoint_files",
    "open_clip_train.precision.get_autocast": "training, evaluation, offline embeddings, cli",
}


def listed() -> set:
    """Every upstream name of the three lists."""
    return set(PATCHED) | set(MIRRORED) | set(READ)
