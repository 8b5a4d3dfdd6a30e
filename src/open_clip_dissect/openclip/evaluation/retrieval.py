"""Zero-shot image-text retrieval with several captions per image (COCO / Flickr30K protocol).

- image retrieval IR@k (text queries): a caption is a hit if its image is in the top k images;
  averaged over all captions;
- text retrieval TR@k (image queries): an image is a hit if *any* of its captions is in the top
  k captions; averaged over images;
- R@sum = IR@1 + IR@10 + TR@1 + TR@10 in percent, as in the DISSect paper.

Ties count against the query: a candidate that scores *equal* to the best correct one ranks
ahead of it, so a collapsed model (all scores equal) gets no credit.

Data: webdataset shards (one image per sample; captions from the ``.json`` ``captions`` list,
else the ``.txt`` lines) or a CSV (rows sharing an image path form one image's captions). The
loaders never shuffle: positions index the ground truth.
"""

import logging
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from open_clip_dissect.core.scorer import unwrap
from open_clip_dissect.errors import InputError

log = logging.getLogger(__name__)
KS = (1, 5, 10)


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_image: torch.Tensor,
    ks: Sequence[int] = KS,
    chunk: int = 1024,
    image_groups: Optional[Dict[str, torch.Tensor]] = None,
) -> Dict[str, float]:
    """Recall@k both ways in percent; ``text_image[t]`` is the index of caption t's image.
    ``image_groups``: name -> boolean mask over the images; each group also gets its metrics as
    ``IR@1[name]`` ... ``R@sum[name]``, over the queries about its images (the gallery stays whole)."""
    image_features = image_features.float()
    text_features = text_features.float()
    text_image = text_image.long()
    n_images, n_texts = len(image_features), len(text_features)
    ir_rank = torch.empty(n_texts, dtype=torch.long)
    for start in range(0, n_texts, chunk):
        sims = text_features[start : start + chunk] @ image_features.T  # [t, I]
        rows = torch.arange(len(sims))
        correct = sims[rows, text_image[start : start + chunk]]
        ir_rank[start : start + chunk] = (sims >= correct[:, None]).sum(1) - 1  # others >= correct
    tr_rank = torch.empty(n_images, dtype=torch.long)
    for start in range(0, n_images, chunk):
        sims = image_features[start : start + chunk] @ text_features.T  # [i, T]
        own = text_image[None, :] == torch.arange(start, start + len(sims))[:, None]
        best = torch.where(own, sims, torch.full_like(sims, -float("inf"))).max(1).values
        tr_rank[start : start + chunk] = ((sims >= best[:, None]) & ~own).sum(1)  # other captions >= best own
    out = recalls(ir_rank, tr_rank, ks)
    for name, mask in (image_groups or {}).items():
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.any():
            part = recalls(ir_rank[mask[text_image]], tr_rank[mask], ks)
            out.update({f"{metric}[{name}]": value for metric, value in part.items()})
    return out


def recalls(ir_rank: torch.Tensor, tr_rank: torch.Tensor, ks: Sequence[int]) -> Dict[str, float]:
    out = {}
    for k in ks:
        out[f"IR@{k}"] = 100.0 * float((ir_rank < k).double().mean())
        out[f"TR@{k}"] = 100.0 * float((tr_rank < k).double().mean())
    return with_r_sum(out)


def with_r_sum(metrics: Dict[str, float]) -> Dict[str, float]:
    """``metrics`` plus the DISSect paper's R@sum = IR@1 + IR@10 + TR@1 + TR@10 (when all four are there)."""
    terms = ("IR@1", "IR@10", "TR@1", "TR@10")
    if all(term in metrics for term in terms):
        metrics["R@sum"] = sum(metrics[term] for term in terms)
    return metrics


# ----------------------------------------------------------------------------- data


def _captions_of(sample) -> List[str]:
    meta = sample.get("json")
    if isinstance(meta, dict) and meta.get("captions"):
        return [str(c) for c in meta["captions"]]
    text = sample.get("txt", "")
    return [line for line in text.splitlines() if line.strip()]


def _groups_of(sample) -> List[str]:
    meta = sample.get("json")
    groups = meta.get("groups") if isinstance(meta, dict) else None
    return [str(g) for g in groups] if isinstance(groups, list) else []


def iter_webdataset(
    urls: Sequence[str], flag: str = "--retrieval-data"
) -> Iterator[Tuple[object, List[str], List[str]]]:
    """(PIL image, captions, groups) per sample, in shard order; groups come from the ``.json``
    ``groups`` list (e.g. ``rare``), if any."""
    import webdataset as wds

    from open_clip_dissect.openclip.pipeline.keyed_data import (
        check_local_shards,
        decode_or_skip,
        tarfile_to_samples_nothrow,
    )

    check_local_shards(urls, flag=flag)
    pipeline = wds.DataPipeline(  # only allow-listed members are decoded (shard_members)
        wds.SimpleShardList(list(urls)),
        tarfile_to_samples_nothrow,
        decode_or_skip,
        wds.rename(image="jpg;png;jpeg;webp", keep=True),
    )
    for sample in pipeline:
        captions = _captions_of(sample)
        if "image" not in sample or not captions:
            log.warning(
                f"Retrieval data: skipping {sample.get('__key__')} in {sample.get('__url__')} "
                f"(needs an image and at least one caption)"
            )
            continue
        yield sample["image"], captions, _groups_of(sample)


def iter_csv(
    path: str, img_key: str = "filepath", caption_key: str = "title", sep: str = "\t", flag: str = "--retrieval-data"
) -> Iterator[Tuple[object, List[str], List[str]]]:
    """(PIL image, captions, no groups) per distinct image path, in order of first appearance."""
    import pandas as pd
    from PIL import Image

    from open_clip_dissect.openclip.pipeline.keyed_data import check_csv_file

    check_csv_file(path, flag, sep, img_key, caption_key)
    frame = pd.read_csv(path, sep=sep)
    for image_path, group in frame.groupby(img_key, sort=False):
        try:
            image = Image.open(image_path)
        except OSError as exn:  # missing or not an image: the csv is wrong
            raise InputError(path, f"cannot open the image {image_path}: {exn}") from None
        with image:
            yield image.convert("RGB"), group[caption_key].astype(str).tolist(), []


def iter_retrieval_data(path: str, img_key="filepath", caption_key="title", sep="\t", flag="--retrieval-data"):
    """``flag``: the flag that names ``path``, for error messages."""
    from open_clip_dissect.openclip.pipeline.keyed_data import expand_shard_urls, is_csv_path

    if is_csv_path(path):
        return iter_csv(path, img_key, caption_key, sep, flag)
    return iter_webdataset(expand_shard_urls(path, flag), flag)


# ----------------------------------------------------------------------------- model


@torch.no_grad()
def embed_retrieval_data(
    model,
    preprocess,
    tokenizer,
    samples,
    device="cpu",
    batch_size=256,
    autocast=None,
    input_dtype=None,
    source: str = "retrieval data",
):
    """Image and text features (L2-normalised, CPU), the caption -> image index and the image
    groups (name -> boolean mask over the images). ``samples`` yields (image, captions) or
    (image, captions, groups)."""
    from contextlib import suppress

    autocast = autocast or suppress
    model = unwrap(model)
    was_training = model.training
    model.eval()
    image_features, text_features, text_image, captions, pending = [], [], [], [], []
    members = {}  # group -> indices of its images

    def flush_images():
        if pending:
            batch = torch.stack(pending).to(device=device, dtype=input_dtype)
            with autocast():
                image_features.append(model.encode_image(batch, normalize=True).float().cpu())
            pending.clear()

    try:
        for index, (image, image_captions, *groups) in enumerate(samples):
            for group in groups[0] if groups else ():
                members.setdefault(group, []).append(index)
            pending.append(preprocess(image))
            captions.extend(image_captions)
            text_image.extend([index] * len(image_captions))
            if len(pending) == batch_size:
                flush_images()
        flush_images()
        for start in range(0, len(captions), batch_size):
            tokens = tokenizer(captions[start : start + batch_size]).to(device)
            with autocast():
                text_features.append(model.encode_text(tokens, normalize=True).float().cpu())
    finally:
        model.train(was_training)
    if not image_features:
        raise InputError(source, "the retrieval data holds no usable sample (an image with a caption)")
    images = torch.cat(image_features)
    groups = {}
    for group, indices in sorted(members.items()):
        groups[group] = torch.zeros(len(images), dtype=torch.bool)
        groups[group][indices] = True
    return images, torch.cat(text_features), torch.as_tensor(np.asarray(text_image)), groups


def evaluate_retrieval(
    model, preprocess, tokenizer, path, device="cpu", batch_size=256, autocast=None, input_dtype=None, **csv_kwargs
) -> Dict[str, float]:
    """R@k both ways and R@sum, also per image group the data tags (``R@sum[rare]``, ...)."""
    images, texts, text_image, groups = embed_retrieval_data(
        model,
        preprocess,
        tokenizer,
        iter_retrieval_data(path, **csv_kwargs),
        device,
        batch_size,
        autocast,
        input_dtype,
        source=path,
    )
    metrics = retrieval_metrics(images, texts, text_image, image_groups=groups)
    metrics.update({"images": float(len(images)), "captions": float(len(texts))})
    return metrics
