"""Training data that carries sample keys: every training batch is
``(images, texts, keys, hashes, noisy)``.

``keys`` is a list of strings, one per sample, that names the sample in the selection history
(``hashes``: their int64 hashes, computed in the loader workers, off the training process's
critical path):
- webdataset: ``<shard url>/<__key__>`` (or the bare ``__key__`` with ``--sample-key key``);
- csv: the row index, or the value of the ``--csv-key-key`` column;
- synthetic: the index.

``noisy`` is an int8 tensor: 1 for a pair known to be mismatched, 0 for a clean one, -1 where
unknown. It is read from the sample's ``.json`` (``"noisy": true/false``, as the synthetic
generator writes) or a csv ``noisy`` column; it feeds the noise audit and nothing else.

Validation and ImageNet loaders are OpenCLIP's, untouched (they yield ``(images, texts)``).

Differences from ``open_clip_train.data`` (open_clip_torch 3.3.0) in the webdataset pipeline:
- the end-of-shard marker ``{}`` that webdataset >= 1.0 yields is treated as a shard boundary
  (upstream's ``group_by_keys_nothrow`` dies on it with ``KeyError: 'fname'``);
- the sample shuffle buffer (and shard resampling) is seeded from ``--seed``, the epoch, the
  rank and the dataloader worker only, so two runs with the same seed see the same samples in
  the same order (upstream seeds the sample buffer from the process id and time);
- a dropped sample (no caption or image, undecodable image) is logged with its key and shard;
- a shard that ends without tar's end-of-archive blocks (cut between two members) is logged as
  truncated, as one cut inside a member is (``tarfile`` alone reads it as a shorter shard);
- an epoch that yields no batch fails, naming its cause (``NonEmptyEpochLoader``), instead of
  reaching OpenCLIP's loop as an epoch of zero steps;
- only the members listed in ``shard_members`` are read, each by its own decoder: nothing in a
  shard is ever unpickled (upstream's ``wds.decode("pilrgb")`` unpickles ``.pyd``/``.pkl``
  members). OpenCLIP's own validation loader is built with the same decoding (``get_data``).
"""

import copy
import functools
import logging
import math
import os
import random
import re
import tarfile
from typing import Optional

import numpy as np
import open_clip_train.data as upstream
import pandas as pd
import torch
import webdataset as wds
from torch.utils.data import get_worker_info
from webdataset.filters import _shuffle
from webdataset.tariterators import base_plus_ext, url_opener, valid_sample

from open_clip_dissect.core.history import hash_keys
from open_clip_dissect.core.keyset import KEY_LIST_NAME, KeySet
from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.launch.devices import pin_host_batches
from open_clip_dissect.openclip.launch.patching import swapped
from open_clip_dissect.openclip.pipeline.shard_members import ALLOWED_MEMBERS, decode_sample, decode_stage

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- keys


def make_sample_key(url: str, key: str, mode: str = "url+key") -> str:
    """The history key of a webdataset sample (see ``--sample-key``)."""
    return key if mode == "key" else f"{url}/{key}"


# ----------------------------------------------------------------------------- seeding


def worker_seed(seed: int, epoch: int, repeat: int = 0) -> int:
    """A seed that depends on --seed, the epoch, the rank, the dataloader worker and how many
    times this worker has restarted its pipeline within the epoch (``repeat``) only."""
    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, rank, worker, repeat]).generate_state(1)
    return int(state[0])


class SeededShuffle(wds.PipelineStage):
    """Sample shuffle buffer seeded by ``worker_seed``; replaces upstream's unseeded ``wds.shuffle``.

    ``with_epoch`` restarts the pipeline when a worker's shards run out before the epoch's batch
    count; each restart gets its own seed so the repeated samples come in a new order.
    """

    def __init__(self, bufsize: int, initial: int, seed: int, shared_epoch: upstream.SharedEpoch):
        self.bufsize, self.initial, self.seed, self.shared_epoch = bufsize, initial, seed, shared_epoch
        self._epoch, self._repeat = None, 0

    def run(self, src):
        epoch = self.shared_epoch.get_value()
        self._repeat = self._repeat + 1 if epoch == self._epoch else 0
        self._epoch = epoch
        seed = worker_seed(self.seed, epoch, self._repeat)
        if get_worker_info() is not None:
            # Augmentations (random crops) draw from the worker's torch RNG: seed it the same
            # way, so a resumed run sees the same crops as an uninterrupted one.
            torch.manual_seed(seed)
        return _shuffle(src, self.bufsize, self.initial, random.Random(seed))


def _resampling_seed(seed: int) -> int:
    # ResampledShards2 adds the epoch itself: seed = worker_seed() + epoch.
    return worker_seed(seed, 0)


# ----------------------------------------------------------------------------- tar reading


def log_shard_error(exn: Exception) -> bool:
    """webdataset handler: log a shard-level error (webdataset appends the shard url) and go on."""
    message = exn.args[0] if exn.args else repr(exn)
    url = next((a for a in reversed(exn.args[1:]) if isinstance(a, str)), None)
    log.warning(f"Skipping the rest of shard {url}: {message}" if url else f"Shard error: {message}")
    return True


def group_by_keys_nothrow(data, keys=base_plus_ext, lcase=True, suffixes=None, handler=None):
    """Group tar members into samples.

    Mirrors ``open_clip_train.data.group_by_keys_nothrow`` (open_clip_torch 3.3.0); the one
    difference is that webdataset's end-of-shard marker ``{}`` closes the current sample, so
    samples never merge across shards (upstream raises ``KeyError: 'fname'`` on it).
    """
    current_sample = None
    for filesample in data:
        assert isinstance(filesample, dict)
        if not filesample:  # end-of-shard marker
            if valid_sample(current_sample):
                yield current_sample
            current_sample = None
            continue
        fname, value = filesample["fname"], filesample["data"]
        prefix, suffix = keys(fname)
        if prefix is None:
            continue
        if lcase:
            suffix = suffix.lower()
        if current_sample is None or prefix != current_sample["__key__"] or suffix in current_sample:
            if valid_sample(current_sample):
                yield current_sample
            current_sample = dict(__key__=prefix, __url__=filesample["__url__"])
        if suffixes is None or suffix in suffixes:
            current_sample[suffix] = value
    if valid_sample(current_sample):
        yield current_sample


class _EndCheckingTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` whose header reader notes on the archive how it ended.

    ``tarfile``'s stream reader stops without an error when the data ends at a member boundary,
    or in the middle of a header, just as at the end-of-archive blocks: without this note a
    shard cut between two members reads as a complete, shorter shard."""

    @classmethod
    def fromtarfile(cls, archive):
        try:
            return super().fromtarfile(archive)
        except tarfile.EOFHeaderError:  # a zero block: the end-of-archive marker
            archive.dissect_complete = True
            raise
        except tarfile.HeaderError:  # no data, part of a header, or not a header
            archive.dissect_complete = False
            raise


def tar_file_iterator(fileobj, url, handler=log_shard_error):
    """``{"fname", "data"}`` per regular member of one tar stream; mirrors webdataset 1.0's
    ``tar_file_iterator`` (the ``__*__`` metadata members are skipped) and logs a warning naming
    the shard when it ends without its end-of-archive blocks (truncated at a member boundary)."""
    stream = tarfile.open(fileobj=fileobj, mode="r|*", tarinfo=_EndCheckingTarInfo)
    members = 0
    for tarinfo in stream:
        fname = tarinfo.name
        try:
            if not tarinfo.isreg() or fname is None or re.match(r"__[^/]*__($|/)", fname):
                continue
            data = stream.extractfile(tarinfo).read()
            members += 1
            yield dict(fname=fname, data=data)
            stream.members = []  # a stream never revisits a member: do not keep them all
        except Exception as exn:
            exn.args = exn.args + (url,)
            if handler(exn):
                continue
            break
    else:
        if not getattr(stream, "dissect_complete", True):
            log.warning(
                f"Shard {url} is truncated: it ends after {members} members without tar's "
                f"end-of-archive blocks; reading the samples before the cut"
            )
    del stream


def tar_file_expander(data, handler=log_shard_error):
    """Mirrors webdataset 1.0's ``tar_file_expander`` with the iterator above: the members of
    every opened shard, each shard followed by the end-of-shard marker ``{}``."""
    for source in data:
        url = source["url"]
        try:
            for sample in tar_file_iterator(source["stream"], url, handler=handler):
                sample["__url__"] = url
                yield sample
            yield {}
        except Exception as exn:
            exn.args = exn.args + (source.get("stream"), url)
            if handler(exn):
                continue
            break


def tarfile_to_samples_nothrow(src, handler=log_shard_error):
    """Mirrors ``open_clip_train.data.tarfile_to_samples_nothrow`` with the grouping above; members
    that no pipeline reads (``shard_members.ALLOWED_MEMBERS``) are dropped here, undecoded."""
    streams = url_opener(src, handler=handler)
    files = tar_file_expander(streams, handler=handler)
    return group_by_keys_nothrow(files, suffixes=ALLOWED_MEMBERS, handler=handler)


def drop_incomplete_samples(src):
    """Keep samples with a caption and an image; log the others by key and shard."""
    for sample in src:
        if upstream.filter_no_caption_or_no_image(sample):
            yield sample
        else:
            found = sorted(k for k in sample if not k.startswith("__"))
            log.warning(
                f"Skipping sample {sample.get('__key__')} in {sample.get('__url__')}: it needs a "
                f".txt caption and a .jpg/.jpeg/.png/.webp image, found {found}"
            )


def decode_or_skip(src):
    """Decode the allowed members (images to RGB PIL images); a sample that fails is logged by
    key and shard and dropped."""
    for sample in src:
        try:
            yield decode_sample(sample)
        except Exception as exn:  # noqa: BLE001 - any decoder failure means "skip this sample"
            log.warning(
                f"Skipping sample {sample.get('__key__')} in {sample.get('__url__')}: cannot decode it ({exn!r})"
            )


def noisy_flag(value) -> int:
    """1 / 0 for a known noisy / clean pair, -1 when the sample does not say."""
    return -1 if value is None or (isinstance(value, float) and math.isnan(value)) else int(bool(value))


def attach_key_and_label(src, mode: str):
    """Add ``key`` (see ``--sample-key``) and ``noisy`` (from the decoded ``.json``, if any).
    A pipeline stage through ``functools.partial(attach_key_and_label, mode=...)``: module-level,
    so that the pipeline pickles for workers started with ``spawn``."""
    for sample in src:
        sample["key"] = make_sample_key(sample["__url__"], sample["__key__"], mode)
        meta = sample.get("json")
        sample["noisy"] = noisy_flag(meta.get("noisy") if isinstance(meta, dict) else None)
        yield sample


def first_row(tokenizer, text):
    """The token row of one caption (the tokenizer returns a batch of one)."""
    return tokenizer(text)[0]


def collate_keyed(samples):
    """Batch ``(image, text, key, noisy)`` tuples: stacked tensors, a list of keys, their hashes
    (here, in the loader worker), int8 labels."""
    images, texts, keys, noisy = zip(*samples)
    keys = list(keys)
    return (torch.stack(images), torch.stack(texts), keys, hash_keys(keys), torch.tensor(noisy, dtype=torch.int8))


def keep_listed(src, keep: KeySet, mode: str):
    """Drop samples whose key is not in ``--keep-list``, before anything is decoded (a stage
    through ``functools.partial``, as ``attach_key_and_label``)."""
    for sample in src:
        if make_sample_key(sample["__url__"], sample["__key__"], mode) in keep:
            yield sample


def check_local_shards(urls, flag: str = "--train-data") -> None:
    """Fail before training, naming the flag and file, when a local shard does not exist."""
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    folder = next((u for u in local if os.path.isdir(u)), None)
    if folder is not None:
        raise InputError(
            flag, f"{folder} is a directory: give its shards, e.g. {os.path.join(folder, '{00000..00009}.tar')}"
        )
    missing = [u for u in local if not os.path.isfile(u)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(flag, f"shard not found: {missing[0]}{more}")


class NonEmptyEpochLoader:
    """Iterates a training loader and fails, naming the cause, when an epoch yields no batch.

    Without this an epoch whose samples were all filtered out (a keep-list that names none of
    them), unreadable or skipped reaches OpenCLIP's loop as zero steps, and the run crashes at
    the epoch's end far from the cause. ``diagnose()`` says why (the main process re-reads the
    shards only then)."""

    def __init__(self, loader, diagnose):
        self.loader, self.diagnose = loader, diagnose

    def __getattr__(self, name):  # num_batches, num_samples and the loader's own attributes
        if name in ("loader", "diagnose"):
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        batches = 0
        for batch in self.loader:
            batches += 1
            yield batch
        if batches == 0:
            subject, cause = self.diagnose()
            raise InputError(subject, f"the epoch has no samples: {cause}")


def why_no_sample(
    urls, batch_size: int, keep: Optional[KeySet] = None, mode: str = "url+key", flag: str = "--train-data"
):
    """``(flag, cause)`` for a webdataset epoch that yielded no batch: nothing readable in the
    shards, no sample listed in ``--keep-list``, or every listed sample skipped or fewer than a
    batch. Reads the shards in this process, warnings silenced (the workers logged them)."""
    read = listed = usable = 0
    example = None
    errors = []  # shard errors, already logged by the workers: counted here, not logged again
    quiet = lambda exn: errors.append(exn) or True  # noqa: E731
    for sample in tarfile_to_samples_nothrow([{"url": u} for u in urls], handler=quiet):
        read += 1
        example = example or make_sample_key(sample["__url__"], sample["__key__"], mode)
        if keep is not None and make_sample_key(sample["__url__"], sample["__key__"], mode) not in keep:
            continue
        listed += 1
        if upstream.filter_no_caption_or_no_image(sample):
            usable += 1
            if usable >= batch_size:
                break
    shards = f"the {len(urls)} shard(s) of {flag}"
    if not read and not errors:
        return flag, f"none of {shards} holds a sample: the tar files are empty"
    if not read:
        return flag, f"none of {shards} holds a readable sample (see the warnings above)"
    if keep is not None and not listed:
        return "--keep-list", (
            f"none of the {read} samples of {shards} is listed (their keys look like {example!r}, see --sample-key)"
        )
    return flag, (
        f"{usable} of the {listed} samples{' listed in --keep-list' if keep is not None else ''} "
        f"have a caption and an image, fewer than one batch of {batch_size} per worker"
        + (" (see the warnings above)" if errors or usable < listed else "")
    )


# ----------------------------------------------------------------------------- loaders


def get_keyed_wds_dataset(args, preprocess_img, is_train=True, epoch=0, floor=False, tokenizer=None):
    """Training webdataset loader yielding ``(images, texts, keys)``.

    Mirrors the training branch of ``open_clip_train.data.get_wds_dataset`` (open_clip_torch
    3.3.0): same shard resampling/splitting, ``num_samples``/``num_batches`` rounding and
    ``with_epoch``; the differing stages are listed in this module's docstring.
    """
    assert is_train, "validation data uses OpenCLIP's own loader"
    input_shards = args.train_data
    resampled = getattr(args, "dataset_resampled", False)
    urls, _ = upstream.expand_urls(input_shards)
    check_local_shards(urls)

    num_shards = None
    keep = KeySet.from_file(args.keep_list, "--keep-list") if args.keep_list else None
    if args.train_num_samples is not None:
        num_samples = args.train_num_samples
    elif keep is not None:
        num_samples = len(keep)  # an epoch is one pass over the kept samples
    else:
        num_samples, num_shards = dataset_size(input_shards)

    shared_epoch = upstream.SharedEpoch(epoch=epoch)
    if args.train_data_upsampling_factors is not None and not resampled:
        raise InputError("--train-data-upsampling-factors", "is only supported with --dataset-resampled")

    if resampled:
        pipeline = [
            upstream.ResampledShards2(
                input_shards,
                weights=args.train_data_upsampling_factors,
                deterministic=True,
                worker_seed=functools.partial(_resampling_seed, args.seed),
                epoch=shared_epoch,
            )
        ]
    else:
        pipeline = [
            wds.SimpleShardList(input_shards),
            upstream.detshuffle2(
                bufsize=upstream._SHARD_SHUFFLE_SIZE,
                initial=upstream._SHARD_SHUFFLE_INITIAL,
                seed=args.seed,
                epoch=shared_epoch,
            ),
            wds.split_by_node,
            wds.split_by_worker,
        ]
    pipeline.append(tarfile_to_samples_nothrow)
    if keep is not None:
        pipeline.append(functools.partial(keep_listed, keep=keep, mode=args.sample_key))
    pipeline.extend(
        [
            SeededShuffle(
                upstream._SAMPLE_SHUFFLE_SIZE,
                upstream._SAMPLE_SHUFFLE_INITIAL,
                seed=args.seed,
                shared_epoch=shared_epoch,
            ),
            drop_incomplete_samples,
            decode_or_skip,
            functools.partial(attach_key_and_label, mode=args.sample_key),
            wds.rename(image="jpg;png;jpeg;webp", text="txt"),
            wds.map_dict(image=preprocess_img, text=functools.partial(first_row, tokenizer)),
            wds.to_tuple("image", "text", "key", "noisy"),  # collate_keyed adds the hashes
            wds.batched(args.batch_size, partial=False, collation_fn=collate_keyed),
        ]
    )
    dataset = wds.DataPipeline(*pipeline)

    if not resampled:
        num_shards = num_shards or len(urls)
        if num_shards < args.workers * args.world_size:
            raise InputError(
                "--workers",
                f"{num_shards} shards cannot feed {args.workers} workers x "
                f"{args.world_size} processes; use fewer workers or --dataset-resampled.",
            )
    round_fn = math.floor if floor else math.ceil
    global_batch_size = args.batch_size * args.world_size
    num_batches = round_fn(num_samples / global_batch_size)
    num_workers = max(1, args.workers)
    num_worker_batches = round_fn(num_batches / num_workers)
    num_batches = num_worker_batches * num_workers
    num_samples = num_batches * global_batch_size
    dataset = dataset.with_epoch(num_worker_batches)

    dataloader = wds.WebLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=pin_host_batches(args.device),  # pinned in the loader's thread: the copy is async
    )
    dataloader.num_batches = num_batches
    dataloader.num_samples = num_samples
    diagnose = functools.partial(why_no_sample, urls, args.batch_size, keep, args.sample_key)
    return upstream.DataInfo(dataloader=NonEmptyEpochLoader(dataloader, diagnose), shared_epoch=shared_epoch)


def dataset_size(input_shards):
    """``open_clip_train.data.get_dataset_size`` for training: ``(samples, shards)``, or an
    ``InputError`` naming the sizes file that cannot be read or the flag that is missing."""
    urls, _ = upstream.expand_urls(input_shards)
    folder = os.path.dirname(urls[0])
    sizes = next(
        (p for p in (os.path.join(folder, "sizes.json"), os.path.join(folder, "__len__")) if os.path.exists(p)), None
    )
    try:
        num_samples, num_shards = upstream.get_dataset_size(input_shards)
    except KeyError as exn:
        raise InputError(sizes, f"lists no size for the shard {exn.args[0]} of --train-data") from None
    except (OSError, ValueError, SyntaxError, TypeError) as exn:
        raise InputError(sizes, f"cannot read the number of samples: {exn}") from None
    if not num_samples:
        raise InputError(
            "--train-num-samples",
            "webdataset training needs the number of samples: pass it, "
            f"or put a sizes.json or __len__ file next to {urls[0]}",
        )
    return num_samples, num_shards


def is_csv_path(path: str) -> bool:
    """Whether a data path names a csv file (the retrieval, eval and embed data); else shards."""
    return path.endswith((".csv", ".tsv"))


def dataset_kind(path: Optional[str], dataset_type: str, flag: str) -> str:
    """``webdataset``, ``csv`` or ``synthetic``: the loader ``open_clip_train.data.get_dataset_fn``
    picks for ``path`` (--dataset-type auto goes by the extension), or an ``InputError``."""
    if dataset_type != "auto":
        return dataset_type
    extension = path.split(".")[-1]
    if extension in ("csv", "tsv"):
        return "csv"
    if extension == "tar":
        return "webdataset"
    raise InputError(
        "--dataset-type",
        f"auto cannot tell the type of {flag} {path} from its extension "
        f"'.{extension}'; pass --dataset-type webdataset or csv",
    )


def check_csv_file(
    path: str, flag: str, sep: str = "\t", img_key=None, caption_key=None, key_column=None, images: bool = False
):
    """The header of the csv ``flag`` names, after checking that the file exists, parses with
    ``sep`` and has the columns asked for; with ``images``, also that every image it names
    exists (for data read in this process: retrieval, eval, embed). Returns the columns."""
    if not os.path.isfile(path):
        raise InputError(flag, f"csv file not found: {path}")
    try:
        header = pd.read_csv(path, sep=sep, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exn:
        raise InputError(
            path, f"cannot read it as a table separated by {sep!r} (see --csv-separator): {str(exn).strip()}"
        ) from None
    check_csv_columns(path, header, sep, img_key, caption_key, key_column)
    if images and img_key is not None:
        names = pd.read_csv(path, sep=sep, usecols=[img_key], dtype=str)[img_key]
        missing = [(row, name) for row, name in enumerate(names) if not os.path.isfile(str(name))]
        if missing:
            (row, name), more = missing[0], f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(path, f"row {row}: image not found: {name}{more}")
    return header


def check_data_source(path: str, flag: str, img_key="filepath", caption_key="title", sep="\t", key_column=None) -> None:
    """Data read in this process (``--retrieval-data``, ``eval``/``embed --data``): a csv with
    its columns and images, or local shards that exist."""
    if is_csv_path(path):
        check_csv_file(path, flag, sep, img_key, caption_key, key_column, images=True)
    else:
        check_local_shards(expand_shard_urls(path, flag), flag)


def expand_shard_urls(pattern: str, flag: str, weights: Optional[str] = None):
    """``open_clip_train.data.expand_urls``: the shard urls (and weights) of a brace pattern."""
    try:
        return upstream.expand_urls(pattern, weights) if weights is not None else upstream.expand_urls(pattern)[0]
    except AssertionError as exn:  # upstream asserts equal counts of sources and weights
        raise InputError("--train-data-upsampling-factors", f"{exn}") from None
    except ValueError as exn:
        raise InputError(flag if weights is None else "--train-data-upsampling-factors", f"{exn}") from None


def check_data_inputs(args) -> None:
    """The data flags' files, checked before OpenCLIP creates the run folder: a run refused for
    them leaves nothing behind. What only reading the data can tell (an epoch without a sample)
    is reported by the loaders (``NonEmptyEpochLoader``)."""
    kind = None
    if args.train_data or args.dataset_type == "synthetic":
        kind = dataset_kind(args.train_data, args.dataset_type, "--train-data")
    if kind == "webdataset":
        _check_training_shards(args)
    elif kind == "csv":  # every image it names too: a missing one would stop a loader worker mid-epoch
        check_csv_file(
            args.train_data,
            "--train-data",
            args.csv_separator,
            args.csv_img_key,
            args.csv_caption_key,
            args.csv_key_key,
            images=True,
        )
    if args.keep_list and kind is not None:
        _check_keep_list(args, kind)
    if args.val_data and args.dataset_type != "synthetic":
        if dataset_kind(args.val_data, args.dataset_type, "--val-data") == "csv":
            check_csv_file(
                args.val_data, "--val-data", args.csv_separator, args.csv_img_key, args.csv_caption_key, images=True
            )
        else:
            check_local_shards(expand_shard_urls(args.val_data, "--val-data"), "--val-data")
    if args.retrieval_data:
        check_data_source(
            args.retrieval_data, "--retrieval-data", args.csv_img_key, args.csv_caption_key, args.csv_separator
        )


def _check_training_shards(args) -> None:
    factors = args.train_data_upsampling_factors
    if factors is not None and not args.dataset_resampled:
        raise InputError("--train-data-upsampling-factors", "is only supported with --dataset-resampled")
    urls = expand_shard_urls(args.train_data, "--train-data")
    if factors is not None:
        expand_shard_urls(args.train_data, "--train-data", factors)
    check_local_shards(urls)
    if args.train_num_samples is None and not args.keep_list:
        dataset_size(args.train_data)
    elif args.train_num_samples is not None and not args.dataset_resampled:
        _check_num_samples(args.train_data, args.train_num_samples)
    if not args.dataset_resampled and len(urls) < args.workers:  # times the processes: checked again later
        raise InputError(
            "--workers",
            f"{len(urls)} shards cannot feed {args.workers} workers; use fewer workers or --dataset-resampled",
        )


def _check_num_samples(train_data: str, wanted: int) -> None:
    """``--train-num-samples`` beyond the samples the sizes file counts would repeat shards in
    every epoch without a word: only ``--dataset-resampled`` samples with replacement."""
    try:
        count, _ = upstream.get_dataset_size(train_data)
    except (KeyError, OSError, ValueError, SyntaxError, TypeError):
        return  # no readable sizes file: nothing to compare with
    if count and wanted > count:
        folder = os.path.dirname(expand_shard_urls(train_data, "--train-data")[0])
        sizes = os.path.join(folder, "sizes.json")
        sizes = sizes if os.path.exists(sizes) else os.path.join(folder, "__len__")
        raise InputError(
            "--train-num-samples",
            f"{wanted} is more than the {count} samples of --train-data ({sizes}): each epoch would repeat "
            f"samples; pass --train-num-samples {count} or fewer, or --dataset-resampled to sample with replacement",
        )


def _check_keep_list(args, kind: str) -> None:
    """A keep-list that names no training sample would give epochs without samples."""
    if kind == "synthetic":
        raise InputError("--keep-list", "needs --dataset-type webdataset or csv")
    path = args.keep_list
    if os.path.isdir(path):
        path = os.path.join(path, KEY_LIST_NAME)
    try:
        keep = KeySet.from_file(path, "--keep-list")
    except UnicodeDecodeError as exn:
        raise InputError("--keep-list", f"{path} is not a text file of keys, one per line ({exn.reason})") from None
    if not len(keep):
        raise InputError("--keep-list", f"{path} lists no key")
    if kind == "csv":
        column = args.csv_key_key
        if column:
            keys = pd.read_csv(args.train_data, sep=args.csv_separator, usecols=[column], dtype=str)[column]
            keys = keys.astype(str).tolist()
        else:
            keys = [str(i) for i in range(len(pd.read_csv(args.train_data, sep=args.csv_separator, usecols=[0])))]
        if not bool(keep.contains(hash_keys(keys)).any()):
            named = f"its {column!r} column" if column else "row indices 0, 1, ... (see --csv-key-key)"
            raise InputError("--keep-list", f"no key in {path} names a row of {args.train_data} (keys are {named})")
    elif args.sample_key == "url+key":  # a listed key starts with its shard's url; none listed: no sample
        urls = set(expand_shard_urls(args.train_data, "--train-data"))
        with open(path) as f:
            first = None
            for line in f:
                key = line.strip()
                first = first or key
                if key and any(key[:i] in urls for i, c in enumerate(key) if c == "/"):
                    return
        example = next(iter(sorted(urls)))
        raise InputError(
            "--keep-list",
            f"no key in {path} names a sample of --train-data: with --sample-key "
            f"url+key a key is '<shard url>/<__key__>' (e.g. '{example}/...'), the "
            f"list holds e.g. {first!r}; for bare keys pass --sample-key key",
        )


def check_csv_columns(path: str, present, sep: str = "\t", img_key=None, caption_key=None, key_column=None) -> None:
    """Fail, naming the flag, when a column named by --csv-img-key / --csv-caption-key /
    --csv-key-key (None: not asked for) is not among ``present``."""
    for flag, column in (("--csv-img-key", img_key), ("--csv-caption-key", caption_key), ("--csv-key-key", key_column)):
        if column is not None and column not in present:
            raise InputError(
                flag,
                f"column {column!r} not in {path} (columns: {list(present)}; separator {sep!r}, see --csv-separator)",
            )


class KeyedCsvDataset(upstream.CsvDataset):
    """OpenCLIP's CsvDataset whose items also carry the sample key (row index or a column) and
    the ``noisy`` label when the file has a ``noisy`` column."""

    def __init__(
        self,
        input_filename,
        transforms,
        img_key,
        caption_key,
        sep="\t",
        tokenizer=None,
        key_column=None,
        keep: Optional[KeySet] = None,
    ):
        header = check_csv_file(input_filename, "--train-data", sep, img_key, caption_key, key_column)
        super().__init__(input_filename, transforms, img_key, caption_key, sep=sep, tokenizer=tokenizer)
        extra = [c for c in (key_column, "noisy") if c is not None and c in header]
        columns = pd.read_csv(input_filename, sep=sep, usecols=extra, dtype={key_column: str}) if extra else {}
        n = len(self.captions)
        self.keys = columns[key_column].tolist() if key_column else [str(i) for i in range(n)]
        self.noisy = [noisy_flag(v) for v in columns["noisy"]] if "noisy" in extra else [-1] * n
        self.hashes = hash_keys(self.keys)  # once, vectorised; items carry theirs
        if keep is not None:  # --keep-list: only the listed rows
            rows = keep.contains(self.hashes).nonzero().squeeze(1)
            self.hashes = self.hashes[rows]
            for name in ("images", "captions", "keys", "noisy"):
                values = getattr(self, name)
                setattr(self, name, [values[i] for i in rows.tolist()])
        if not self.keys:
            if keep is not None:
                raise InputError("--keep-list", f"the epoch has no samples: no row of {input_filename} is listed")
            raise InputError(input_filename, "the epoch has no samples: the file holds no row")

    def __getitem__(self, idx):
        images, texts = super().__getitem__(idx)
        return images, texts, self.keys[idx], self.hashes[idx], self.noisy[idx]


class KeyedSyntheticDataset(upstream.SyntheticDataset):
    """OpenCLIP's SyntheticDataset whose items also carry their index as key (and its hash)."""

    def __getitem__(self, idx):
        images, texts = super().__getitem__(idx)
        return images, texts, str(idx), hash_keys([str(idx)])[0], -1


def get_keyed_csv_dataset(args, preprocess_fn, is_train=True, epoch=0, tokenizer=None):
    """``open_clip_train.data.get_csv_dataset`` building a KeyedCsvDataset."""
    keep = KeySet.from_file(args.keep_list, "--keep-list") if args.keep_list else None
    cls = functools.partial(KeyedCsvDataset, key_column=args.csv_key_key, keep=keep)
    with swapped(upstream, CsvDataset=cls):
        info = upstream.get_csv_dataset(args, preprocess_fn, is_train, epoch, tokenizer)
    if info.dataloader.num_batches == 0:  # upstream drops the last partial batch
        rows = len(info.dataloader.dataset)
        raise InputError(
            "--batch-size",
            f"the epoch has no samples: {args.train_data} has {rows} rows"
            f"{' listed in --keep-list' if keep is not None else ''}, "
            f"fewer than one batch of {args.batch_size} per process",
        )
    return info


def get_keyed_synthetic_dataset(args, preprocess_fn, is_train=True, epoch=0, tokenizer=None):
    """``open_clip_train.data.get_synthetic_dataset`` building a KeyedSyntheticDataset."""
    if args.keep_list:
        raise InputError("--keep-list", "needs --dataset-type webdataset or csv")
    with swapped(upstream, SyntheticDataset=KeyedSyntheticDataset):
        return upstream.get_synthetic_dataset(args, preprocess_fn, is_train, epoch, tokenizer)


class SafeDecodingWebdataset:
    """The ``webdataset`` module as ``open_clip_train.data`` sees it while it builds the validation
    loader: every name is webdataset's, except ``decode``. Upstream (open_clip_torch 3.3.0,
    ``get_wds_dataset``) calls ``wds.decode("pilrgb", handler=log_and_continue)``, whose default
    handlers unpickle ``.pyd``/``.pkl`` members; here it is ``shard_members.decode_stage``."""

    def __getattr__(self, name):
        return getattr(wds, name)

    @staticmethod
    def decode(*handlers, handler=wds.reraise_exception, **options):
        if handlers != ("pilrgb",) or options:
            raise NotImplementedError(f"webdataset decode{handlers} {options}: only 'pilrgb' is mirrored")
        return decode_stage(handler)


_KEYED = {
    upstream.get_wds_dataset: get_keyed_wds_dataset,
    upstream.get_csv_dataset: get_keyed_csv_dataset,
    upstream.get_synthetic_dataset: get_keyed_synthetic_dataset,
}


def get_data(args, preprocess_fns, epoch=0, tokenizer=None, train_batch_size=None):
    """``open_clip_train.data.get_data`` with a key-carrying training loader, which draws
    ``train_batch_size`` samples per batch when given (default: ``--batch-size``)."""
    preprocess_train, preprocess_val = preprocess_fns
    data = {}
    if args.train_data or args.dataset_type == "synthetic":
        dataset_kind(args.train_data, args.dataset_type, "--train-data")  # upstream's ValueError, named
        upstream_fn = upstream.get_dataset_fn(args.train_data, args.dataset_type)
        train_args = args
        if train_batch_size is not None and train_batch_size != args.batch_size:
            train_args = copy.copy(args)
            train_args.batch_size = train_batch_size
        data["train"] = _KEYED[upstream_fn](
            train_args, preprocess_train, is_train=True, epoch=epoch, tokenizer=tokenizer
        )
    if args.val_data:
        dataset_kind(args.val_data, args.dataset_type, "--val-data")
        with swapped(upstream, wds=SafeDecodingWebdataset()):
            data["val"] = upstream.get_dataset_fn(args.val_data, args.dataset_type)(
                args, preprocess_val, is_train=False, tokenizer=tokenizer
            )
    if args.imagenet_val is not None:
        data["imagenet-val"] = upstream.get_imagenet(args, preprocess_fns, "val")
    if args.imagenet_v2 is not None:
        data["imagenet-v2"] = upstream.get_imagenet(args, preprocess_fns, "v2")
    return data
