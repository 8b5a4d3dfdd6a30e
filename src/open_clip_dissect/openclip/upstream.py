"""Every name of OpenCLIP (open_clip_torch 3.3.0) and torch that this package patches during its
own runs, or mirrors in its own code. A new OpenCLIP release is checked against this list
(``tests/test_cli.py::test_every_listed_upstream_name_exists``) before the pin moves."""

UPSTREAM_VERSION = "3.3.0"  # open_clip_torch, pinned in setup.cfg

# Swapped for the duration of ``python -m open_clip_dissect.main`` (``openclip.main``) or of one
# call of ours (``openclip.data``, ``openclip.params``); never on import.
PATCHED = {
    "open_clip_train.main.parse_args": "openclip.params.parse_args: OpenCLIP's flags plus ours",
    "open_clip_train.main.get_data": "openclip.train.TrainingSession.get_data: the key-carrying training loader",
    "open_clip_train.main.train_one_epoch": "openclip.train.TrainingSession.train_one_epoch: select, then upstream's loop",
    "open_clip_train.main.setup_logging": "openclip.main.setup_logging: upstream's, then torch's loggers back to WARNING",
    "open_clip_train.main.torch": "openclip.checkpoint_files.AtomicSaveTorch: checkpoints written atomically",
    "open_clip_train.main.get_latest_checkpoint": "openclip.checkpoint_files.latest_complete_checkpoint: skips incomplete ones",
    "torch.nn.parallel.DistributedDataParallel": "openclip.main.CpuFriendlyDDP: several processes on the CPU",
    "open_clip_train.params.argparse": "openclip.params: the parser gains our argument group",
    "open_clip_train.data.wds": "openclip.data.SafeDecodingWebdataset: the validation loader decodes by allow-list",
    "open_clip_train.data.CsvDataset": "openclip.data.KeyedCsvDataset: rows carry their keys",
    "open_clip_train.data.SyntheticDataset": "openclip.data.KeyedSyntheticDataset: items carry their index as key",
}

# Re-created in our code (the differences are listed where each lives).
MIRRORED = {
    "open_clip_train.data.group_by_keys_nothrow": "openclip.data.group_by_keys_nothrow (webdataset 1.0 end-of-shard marker)",
    "open_clip_train.data.tarfile_to_samples_nothrow": "openclip.data.tarfile_to_samples_nothrow (allow-listed members)",
    "open_clip_train.data.get_wds_dataset": "openclip.data.get_keyed_wds_dataset (its training branch)",
    "open_clip_train.data.get_data": "openclip.data.get_data",
    "open_clip_train.params.parse_args": "openclip.params.parse_args",
    "open_clip_train.train.train_one_epoch": "openclip.train.TrainingSession.train_one_epoch (its signature)",
}
