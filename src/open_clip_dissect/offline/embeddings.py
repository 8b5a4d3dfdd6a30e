"""``open-clip-dissect embed``: a frozen CLIP model's image and text embeddings, keyed by sample.

Output folder: one part per input shard (or per ``part_size`` csv rows), each written atomically
as ``part-NNNNN.image.npy``, ``part-NNNNN.text.npy`` (float32, L2-normalised) and
``part-NNNNN.keys.parquet`` (``key`` as in training records, ``uid`` when the sample has one,
``noisy`` when known), plus ``index.json`` (model, checkpoint, the model's temperature, parts
done). A re-run skips the parts already in the index, so an interrupted run resumes.
"""

import functools
import json
import logging
import os
from typing import Optional

import numpy as np
import pandas as pd
import torch

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.models.frozen import load_frozen_model

log = logging.getLogger(__name__)
INDEX = "index.json"


def _write_json(path, obj):
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1)


def _save_npy(path, array):
    with atomic_output(path) as tmp:
        np.save(tmp, array)


def _wds_part(url, preprocess, tokenizer, batch_size, workers, sample_key):
    """Batches ``(images, texts, keys, uids, noisy)`` of one shard, in shard order."""
    import webdataset as wds

    from open_clip_dissect.openclip.pipeline import keyed_data as data

    pipeline = wds.DataPipeline(
        wds.SimpleShardList([url]),
        data.tarfile_to_samples_nothrow,
        data.drop_incomplete_samples,
        data.decode_or_skip,
        functools.partial(data.attach_key_and_label, mode=sample_key),
        wds.map(_uid_of),
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.map_dict(image=preprocess, text=functools.partial(data.first_row, tokenizer)),
        wds.to_tuple("image", "text", "key", "uid", "noisy"),
        wds.batched(batch_size, partial=True, collation_fn=_collate),
    )
    return wds.WebLoader(pipeline, batch_size=None, num_workers=min(workers, 1))


def _uid_of(sample):
    meta = sample.get("json")
    sample["uid"] = str(meta.get("uid", "")) if isinstance(meta, dict) else ""
    return sample


def _collate(samples):
    images, texts, keys, uids, noisy = zip(*samples)
    return torch.stack(images), torch.stack(texts), list(keys), list(uids), torch.tensor(noisy, dtype=torch.int8)


class _CsvRows(torch.utils.data.Dataset):
    def __init__(self, frame, img_key, caption_key, preprocess, tokenizer):
        self.frame, self.img_key, self.caption_key = frame, img_key, caption_key
        self.preprocess, self.tokenizer = preprocess, tokenizer

    def __len__(self):
        return len(self.frame)

    def __getitem__(self, i):
        from PIL import Image

        row = self.frame.iloc[i]
        with Image.open(row[self.img_key]) as image:
            pixels = self.preprocess(image.convert("RGB"))
        from open_clip_dissect.openclip.pipeline.keyed_data import noisy_flag

        return (
            pixels,
            self.tokenizer([str(row[self.caption_key])])[0],
            row["__key__"],
            str(row["uid"]) if "uid" in row.index else "",
            noisy_flag(row.get("noisy")),
        )


def _csv_parts(path, part_size, img_key, caption_key, key_column, sep):
    frame = pd.read_csv(path, sep=sep, dtype={key_column: str} if key_column else None)
    frame["__key__"] = frame[key_column].astype(str) if key_column else [str(i) for i in range(len(frame))]
    for start in range(0, len(frame), part_size):
        yield f"{path}[{start}:{start + part_size}]", frame.iloc[start : start + part_size]


def embed(
    model_name: str,
    checkpoint: Optional[str],
    data: str,
    out_dir: str,
    batch_size: int = 256,
    workers: int = 1,
    device: str = "cpu",
    precision: str = "fp32",
    sample_key: str = "url+key",
    img_key: str = "filepath",
    caption_key: str = "title",
    key_column: Optional[str] = None,
    sep: str = "\t",
    part_size: int = 100_000,
    progress: bool = True,
    allow_pickle: bool = False,
) -> dict:
    import open_clip
    from open_clip_train.precision import get_autocast
    from tqdm import tqdm

    from open_clip_dissect.openclip.launch.run_attempt import check_model_name
    from open_clip_dissect.openclip.pipeline.keyed_data import check_data_source, expand_shard_urls, is_csv_path

    # Everything the flags name is checked before the output folder is made.
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError("--out", f"{out_dir} is a file, not a folder")
    check_model_name(model_name)
    check_data_source(data, "--data", img_key, caption_key, sep, key_column)
    index_path = os.path.join(out_dir, INDEX)
    index = {"model": model_name, "checkpoint": checkpoint, "data": data, "parts": {}}
    if os.path.isfile(index_path):
        previous = _read_index(index_path)
        if (previous["model"], previous["checkpoint"]) != (model_name, checkpoint):
            raise InputError(
                "--out",
                f"{out_dir} holds embeddings of {previous['model']} / {previous['checkpoint']}; use another folder",
            )
        index = previous
    model, preprocess, tokenizer = load_frozen_model(
        model_name, checkpoint, device, precision, allow_pickle=allow_pickle
    )
    os.makedirs(out_dir, exist_ok=True)
    index["logit_scale"] = float(model.logit_scale.exp())
    index["tau"] = 1.0 / index["logit_scale"]
    autocast = get_autocast(precision, device_type=torch.device(device).type)
    input_dtype = open_clip.get_input_dtype(precision)

    if is_csv_path(data):
        parts = [
            (
                source,
                lambda frame=frame: torch.utils.data.DataLoader(
                    _CsvRows(frame, img_key, caption_key, preprocess, tokenizer),
                    batch_size=batch_size,
                    num_workers=workers,
                    collate_fn=_collate,
                ),
            )
            for source, frame in _csv_parts(data, part_size, img_key, caption_key, key_column, sep)
        ]
    else:
        urls = expand_shard_urls(data, "--data")
        parts = [
            (url, lambda url=url: _wds_part(url, preprocess, tokenizer, batch_size, workers, sample_key))
            for url in urls
        ]
    bar = tqdm(total=len(parts), desc="embed", unit="part", disable=not progress)
    for i, (source, make_loader) in enumerate(parts):
        name = f"part-{i:05d}"
        if name in index["parts"]:
            bar.update(1)
            continue
        images, texts, keys, uids, noisy = [], [], [], [], []
        with torch.no_grad():
            for batch_images, batch_texts, batch_keys, batch_uids, batch_noisy in make_loader():
                with autocast():
                    images.append(
                        model.encode_image(batch_images.to(device, input_dtype), normalize=True).float().cpu()
                    )
                    texts.append(model.encode_text(batch_texts.to(device), normalize=True).float().cpu())
                keys += batch_keys
                uids += batch_uids
                noisy.append(batch_noisy)
        if images:
            _save_npy(os.path.join(out_dir, f"{name}.image.npy"), torch.cat(images).numpy())
            _save_npy(os.path.join(out_dir, f"{name}.text.npy"), torch.cat(texts).numpy())
            frame = pd.DataFrame({"key": keys, "uid": uids, "noisy": torch.cat(noisy).numpy()})
            with atomic_output(os.path.join(out_dir, f"{name}.keys.parquet")) as tmp:
                frame.to_parquet(tmp, index=False)
        index["parts"][name] = {"source": source, "count": len(keys)}
        _write_json(index_path, index)
        bar.update(1)
    bar.close()
    return index


def _read_index(path: str) -> dict:
    try:
        with open(path) as f:
            index = json.load(f)
        if not isinstance(index, dict) or not isinstance(index.get("parts"), dict):
            raise ValueError("no 'parts'")
        index["model"], index["checkpoint"]  # noqa: B018 - both are required
        return index
    except (ValueError, KeyError) as exn:
        raise InputError(path, f"not an index written by `open-clip-dissect embed` ({exn})") from None


def load_embeddings(directory: str, flag: str = "--embeddings"):
    """``(frame with key/uid/noisy, image [N, d], text [N, d], index)`` in part order; ``flag``
    names the folder in errors."""
    index_path = os.path.join(directory, INDEX)
    if not os.path.isfile(index_path):
        raise InputError(flag, f"no {INDEX} in {directory} (run `open-clip-dissect embed` first)")
    index = _read_index(index_path)
    names = sorted(n for n, p in index["parts"].items() if p.get("count"))
    if not names:
        raise InputError(flag, f"{directory} holds no embeddings (its data had no usable sample)")
    paths = [
        os.path.join(directory, f"{n}.{kind}") for n in names for kind in ("keys.parquet", "image.npy", "text.npy")
    ]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise InputError(missing[0], f"listed in {index_path} but missing (re-run `open-clip-dissect embed`)")
    frames = [pd.read_parquet(os.path.join(directory, f"{n}.keys.parquet")) for n in names]
    image = torch.from_numpy(np.concatenate([np.load(os.path.join(directory, f"{n}.image.npy")) for n in names]))
    text = torch.from_numpy(np.concatenate([np.load(os.path.join(directory, f"{n}.text.npy")) for n in names]))
    return pd.concat(frames, ignore_index=True), image, text, index
