"""Synthetic image-text data with controlled noisy correspondence.

Each image shows one to three coloured shapes on a plain background, each shape at a named
position of a 3x3 grid and of a named size; the caption describes them. Noise is injected into
the training split only:

- ``shuffle``: the caption is another sample's caption (the protocol of noisy-correspondence
  papers): a random derangement of the captions of the chosen samples;
- ``partial``: one or two attributes (colour, shape or position of one shape) are wrong in the
  caption, which is closer to web noise and not trivially separable by loss.

Every sample's ``.json`` records ``noisy`` and the ``true_caption``. Output is deterministic in
``seed``: the same arguments write byte-identical shards.
"""
import hashlib
import io
import json
import os
import random
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import List, Optional

from PIL import Image, ImageDraw

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.errors import InputError

COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 210, 40), "purple": (140, 60, 180), "orange": (245, 140, 30),
}
BACKGROUNDS = {"white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.28, "large": 0.45}  # extent as a fraction of a grid cell's double size
POSITIONS = {
    "top left": (0, 0), "top": (0, 1), "top right": (0, 2),
    "left": (1, 0), "center": (1, 1), "right": (1, 2),
    "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2),
}
NOISE_KINDS = ("shuffle", "partial")
SPLITS = ("train", "val", "test")  # test: the retrieval split, several captions per image


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    size: str
    position: str

    def describe(self) -> str:
        where = {"center": "in the center", "left": "on the left", "right": "on the right"}
        return f"a {self.size} {self.color} {self.shape} {where.get(self.position, 'at the ' + self.position)}"


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple

    def caption(self) -> str:
        parts = [s.describe() for s in self.shapes]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{body}, on a {self.background} background"

    def paraphrase(self, rng: random.Random) -> str:
        """Another wording of the same scene: shape order, prepositions, joins and background
        phrase vary; the vocabulary stays that of the training captions."""
        shapes = list(self.shapes)
        rng.shuffle(shapes)
        parts = []
        for s in shapes:
            where = rng.choice(["at the", "in the"]) + " " + s.position
            parts.append(rng.choice([f"a {s.size} {s.color} {s.shape} {where}",
                                     f"{where} a {s.size} {s.color} {s.shape}"]))
        joiner = rng.choice([", ", " and ", "; "])
        body = joiner.join(parts)
        background = rng.choice([f"on a {self.background} background", f"{self.background} background",
                                 f"the background is {self.background}"])
        return rng.choice([f"{body}, {background}", f"{background}: {body}"])

    def captions(self, n: int, rng: random.Random) -> List[str]:
        """``n`` distinct-as-possible captions, the canonical one first."""
        out = [self.caption()]
        for _ in range(20 * n):
            if len(out) == n:
                break
            candidate = self.paraphrase(rng)
            if candidate not in out:
                out.append(candidate)
        return out + [self.paraphrase(rng) for _ in range(n - len(out))]


def random_scene(rng: random.Random) -> Scene:
    n = rng.randint(1, 3)
    positions = rng.sample(sorted(POSITIONS), n)
    shapes = tuple(
        Shape(rng.choice(SHAPES), rng.choice(sorted(COLORS)), rng.choice(sorted(SIZES)), pos)
        for pos in positions)
    return Scene(rng.choice(sorted(BACKGROUNDS)), shapes)


def corrupt_scene(scene: Scene, rng: random.Random) -> Scene:
    """One or two wrong attributes (colour, shape or position) of the scene's shapes."""
    shapes = list(scene.shapes)
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(shapes))
        attribute = rng.choice(("color", "shape", "position"))
        if attribute == "color":
            value = rng.choice([c for c in sorted(COLORS) if c != shapes[i].color])
        elif attribute == "shape":
            value = rng.choice([s for s in SHAPES if s != shapes[i].shape])
        else:
            taken = {s.position for s in shapes}
            value = rng.choice([p for p in sorted(POSITIONS) if p not in taken])
        shapes[i] = replace(shapes[i], **{attribute: value})
    return Scene(scene.background, tuple(shapes))


def render(scene: Scene, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for s in scene.shapes:
        row, col = POSITIONS[s.position]
        cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        r = SIZES[s.size] * cell
        color = COLORS[s.color]
        if s.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
        elif s.shape == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
        elif s.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=color)
        else:  # diamond
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=color)
    return image


@dataclass
class Sample:
    key: str
    uid: str
    scene: Scene
    caption: str
    noisy: bool
    captions: Optional[List[str]] = None  # retrieval split: several wordings of the scene


def make_samples(split: str, n: int, seed: int, noise_rate: float = 0.0,
                 noise_kind: str = "shuffle", captions_per_image: int = 1) -> List[Sample]:
    """The samples of one split (scenes and captions, no pixels); noise only for ``train``;
    ``captions_per_image`` > 1 gives each sample that many wordings (retrieval split)."""
    if not 0.0 <= noise_rate <= 1.0:
        raise InputError("--noise-rate", f"must be in [0, 1], got {noise_rate}")
    if noise_kind not in NOISE_KINDS:
        raise InputError("--noise-kind", f"must be one of {NOISE_KINDS}, got {noise_kind!r}")
    samples, seen = [], set()
    for i in range(n):
        tag = f"{seed}:{split}:{i}"
        scene = random_scene(random.Random(tag))
        # The retrieval split never repeats a scene: two identical images tie on every query,
        # and no retrieval metric can say which of them is "the" right answer.
        redraw = 0
        while split == "test" and scene in seen:
            redraw += 1
            scene = random_scene(random.Random(f"{tag}:redraw{redraw}"))
        seen.add(scene)
        uid = hashlib.md5(tag.encode()).hexdigest()
        captions = scene.captions(captions_per_image, random.Random(tag + ":captions")) \
            if captions_per_image > 1 else None
        samples.append(Sample(f"{i:08d}", uid, scene, scene.caption(), False, captions))
    if split != "train" or noise_rate == 0.0 or n == 0:
        return samples

    rng = random.Random(f"{seed}:{split}:noise")
    chosen = sorted(rng.sample(range(n), round(noise_rate * n)))
    if noise_kind == "shuffle":
        order = chosen[:]
        rng.shuffle(order)
        # Rotating a random order by one is a derangement: nobody keeps its own caption.
        new_captions = {order[j]: samples[order[(j + 1) % len(order)]].caption for j in range(len(order))}
    else:
        new_captions = {i: corrupt_scene(samples[i].scene, random.Random(f"{seed}:{split}:{i}:noise")).caption()
                        for i in chosen}
    for i, caption in new_captions.items():
        samples[i].caption = caption
        # Two scenes can share a description; such a sample is not mislabelled after all.
        samples[i].noisy = caption != samples[i].scene.caption()
    return samples


def _encode(image: Image.Image, image_format: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG" if image_format == "png" else "JPEG", quality=95)
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644  # fixed metadata: reproducible bytes
    tar.addfile(info, io.BytesIO(payload))


def sample_record(sample: Sample, split: str, noise_kind: Optional[str]) -> dict:
    extra = {"captions": sample.captions} if sample.captions else {}
    return {**extra,
        "key": sample.key, "uid": sample.uid, "split": split, "caption": sample.caption,
        "true_caption": sample.scene.caption(), "noisy": sample.noisy,
        "noise_kind": noise_kind if sample.noisy else None,
        "background": sample.scene.background,
        "shapes": [vars(s) for s in sample.scene.shapes],
    }


def write_shard(path: str, samples: List[Sample], split: str, image_size: int, image_format: str,
                noise_kind: Optional[str], image_dir: Optional[str] = None) -> int:
    """Write one webdataset shard atomically; with ``image_dir`` also write the images as files."""
    with atomic_output(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            image = _encode(render(sample.scene, image_size), image_format)
            _add_member(tar, f"{sample.key}.{image_format}", image)
            text = "\n".join(sample.captions) if sample.captions else sample.caption
            _add_member(tar, f"{sample.key}.txt", text.encode())
            record = sample_record(sample, split, noise_kind)
            _add_member(tar, f"{sample.key}.json", json.dumps(record, sort_keys=True).encode())
            if image_dir is not None:
                with open(os.path.join(image_dir, f"{sample.key}.{image_format}"), "wb") as f:
                    f.write(image)
    return len(samples)


def write_split(out_dir: str, split: str, samples: List[Sample], shard_size: int = 1000,
                image_size: int = 64, image_format: str = "png", noise_kind: Optional[str] = None,
                csv: bool = False, workers: int = 1, progress: bool = True) -> List[str]:
    """Write ``out_dir/<split>/NNNNN.tar`` plus ``sizes.json`` (read by OpenCLIP) and optionally
    ``out_dir/<split>.csv`` with the images under ``out_dir/<split>_images/``."""
    from tqdm import tqdm

    if image_format not in ("png", "jpg"):
        raise InputError("--image-format", f"must be png or jpg, got {image_format!r}")
    split_dir = os.path.join(out_dir, split)
    os.makedirs(split_dir, exist_ok=True)
    image_dir = os.path.abspath(os.path.join(out_dir, f"{split}_images")) if csv else None
    if image_dir:
        os.makedirs(image_dir, exist_ok=True)
    chunks = [samples[i:i + shard_size] for i in range(0, len(samples), shard_size)]
    names = [f"{i:05d}.tar" for i in range(len(chunks))]
    jobs = [(os.path.join(split_dir, name), chunk, split, image_size, image_format, noise_kind, image_dir)
            for name, chunk in zip(names, chunks)]
    bar = tqdm(total=len(samples), desc=f"{split} shards", unit="sample", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for count in pool.map(write_shard, *zip(*jobs)):
                bar.update(count)
    else:
        for job in jobs:
            bar.update(write_shard(*job))
    bar.close()
    _write_json(os.path.join(split_dir, "sizes.json"), {n: len(c) for n, c in zip(names, chunks)})
    if csv:
        import pandas as pd

        rows = [(os.path.join(image_dir, f"{s.key}.{image_format}"), caption, s.key, s.noisy)
                for s in samples for caption in (s.captions or [s.caption])]
        frame = pd.DataFrame(rows, columns=["filepath", "title", "key", "noisy"])
        with atomic_output(os.path.join(out_dir, f"{split}.csv")) as tmp:
            frame.to_csv(tmp, sep="\t", index=False)
    return [os.path.join(split_dir, n) for n in names]


def write_coco_layout(out_dir: str, samples: List[Sample], image_size: int = 64) -> dict:
    """The samples as MS-COCO's Karpathy test split is laid out for CLIP_benchmark:
    ``out_dir/val2014/COCO_val2014_<id>.jpg`` and ``out_dir/coco_test_karpathy.json`` (COCO captions
    JSON, every caption of every image). JPEG bytes equal those of ``--image-format jpg`` shards."""
    image_dir = os.path.join(out_dir, "val2014")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for sample in samples:
        image_id = int(sample.key) + 1
        name = f"COCO_val2014_{image_id:012d}.jpg"
        _write_bytes(os.path.join(image_dir, name), _encode(render(sample.scene, image_size), "jpg"))
        images.append({"id": image_id, "file_name": name, "width": image_size, "height": image_size})
        for caption in sample.captions or [sample.caption]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    _write_json(os.path.join(out_dir, "coco_test_karpathy.json"), {"images": images, "annotations": annotations})
    return {"root": out_dir, "images": len(images), "captions": len(annotations)}


def write_flickr_layout(out_dir: str, samples: List[Sample], image_size: int = 64,
                        annotation: str = "flickr30k_test_karpathy.txt") -> dict:
    """The samples as Flickr30K's Karpathy test split is laid out for CLIP_benchmark:
    ``out_dir/<name>.jpg`` and ``out_dir/flickr30k_test_karpathy.txt`` (CSV with the header
    ``image,caption``, one row per caption; captions holding a comma are quoted, and
    CLIP_benchmark, which splits rows on ``.jpg,``, keeps those quotes)."""
    import csv

    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for sample in samples:
        name = f"{sample.key}.jpg"
        _write_bytes(os.path.join(out_dir, name), _encode(render(sample.scene, image_size), "jpg"))
        rows.extend((name, caption) for caption in sample.captions or [sample.caption])
    with atomic_output(os.path.join(out_dir, annotation)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("image", "caption"))
        writer.writerows(rows)
    return {"root": out_dir, "images": len(samples), "captions": len(rows)}


def _write_bytes(path: str, payload: bytes) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)


def _write_json(path: str, obj) -> None:
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def shard_pattern(out_dir: str, split: str, num_shards: int) -> str:
    """The brace pattern OpenCLIP's ``--train-data``/``--val-data`` take for a split."""
    last = max(num_shards - 1, 0)
    return os.path.join(out_dir, split, f"{{00000..{last:05d}}}.tar")


def make_dataset(out_dir: str, train_size: int = 20000, val_size: int = 1000, seed: int = 0,
                 noise_rate: float = 0.4, noise_kind: str = "shuffle", shard_size: int = 1000,
                 image_size: int = 64, image_format: str = "png", csv: bool = False,
                 workers: int = 1, progress: bool = True, test_size: int = 0,
                 test_captions: int = 5, coco_layout: Optional[str] = None,
                 flickr_layout: Optional[str] = None) -> dict:
    """Write the train (noisy), val (clean) and, with ``test_size``, the test (retrieval: clean,
    ``test_captions`` wordings per image) splits; return and save a manifest. ``coco_layout`` and
    ``flickr_layout``: folders that also get the test split in MS-COCO's and Flickr30K's layout
    (as CLIP_benchmark reads them)."""
    if shard_size < 1:
        raise InputError("--shard-size", f"must be >= 1, got {shard_size}")
    for flag, folder in (("--coco-layout", coco_layout), ("--flickr-layout", flickr_layout)):
        if folder and test_size < 1:
            raise InputError(flag, "writes the test split: give --test-size > 0")
    manifest = {"seed": seed, "noise_rate": noise_rate, "noise_kind": noise_kind,
                "image_size": image_size, "image_format": image_format, "splits": {}}
    for split, n in (("train", train_size), ("val", val_size), ("test", test_size)):
        if split == "test" and n == 0:
            continue
        samples = make_samples(split, n, seed, noise_rate if split == "train" else 0.0, noise_kind,
                               test_captions if split == "test" else 1)
        shards = write_split(out_dir, split, samples, shard_size, image_size, image_format,
                             noise_kind if split == "train" else None, csv, workers, progress)
        manifest["splits"][split] = {
            "num_samples": n, "num_noisy": sum(s.noisy for s in samples), "num_shards": len(shards),
            "pattern": shard_pattern(out_dir, split, len(shards)),
            "csv": os.path.join(out_dir, f"{split}.csv") if csv else None,
        }
        if split == "test":
            if coco_layout:
                manifest["coco_layout"] = write_coco_layout(coco_layout, samples, image_size)
            if flickr_layout:
                manifest["flickr_layout"] = write_flickr_layout(flickr_layout, samples, image_size)
    _write_json(os.path.join(out_dir, "manifest.json"), manifest)
    return manifest
