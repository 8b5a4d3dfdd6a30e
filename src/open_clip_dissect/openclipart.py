"""Real image-text pairs from the Open Clip Art Library, as Debian packages it (0.18).

``openclipart-png`` holds PNG renderings and ``openclipart-svg`` the same items as SVG, whose
RDF/Dublin Core metadata carries the author's ``dc:title``, ``dc:description`` and ``dc:subject``
tags. A PNG pairs with the SVG at the same path (``png/<folder>/<name>.png`` with
``svg/<folder>/<name>.svg``); an item listed in several folders (a symbolic link) is one listing
per folder.

- **Caption** (alt-text style, as the author wrote it): the title; then the description when it
  is at most ``DESCRIPTION_MAX`` characters and not the title again; then the tags, in their
  order, joined by ", " (empty ones and repeats dropped). The pieces are joined by ". " (a space
  alone after a piece that already ends in . ! or ?); whitespace is collapsed, nothing else
  changes, natural junk included.
- **Junk** (``JUNK_RULES``; a sample may match several): ``collection`` (the title names a
  collection, theme or icon set), ``creator`` (the title holds the creator's name), ``contact``
  (the caption holds an e-mail address or a URL), ``placeholder`` (the title is empty, has no
  letter, or is a placeholder such as "Untitled" or "New document 1"; or the caption holds a
  Perl reference printed in place of a text, "HASH(0x852c614)").
- **Images**: composited on white (the alpha channel), padded with white to a square (the
  drawing centred, its aspect kept), resized to ``image_size`` (Lanczos), RGB. Pixel-identical
  results (SHA-256 of the final pixels) are one image: the listing with the smallest path is
  kept, the others are dropped, so no held-out image equals a train image. PNGs of more than
  ``PIXEL_LIMIT`` pixels, or that do not decode, are left out.
- **Held-out splits** ``val`` and ``test``: only clean samples (not junk) whose caption
  describes the image (a word of the title or the description is a word of the folder path or
  of the tags) and occurs nowhere else in the set (case and whitespace aside): no retrieval
  ties. They are stratified by leaf folder: a folder's share is proportional to its size, at
  most half of the folder (so every folder of two or more keeps training samples) and at most
  what qualifies in it. The rest is ``train``.
- **Noise**: ``shuffle`` only, in ``train`` only, as the synthetic generator injects it: a random
  ``noise_rate`` of the training pairs get a derangement of their captions; a pair whose new
  caption equals its own (shared captions) is not counted noisy.
- **Rare**: samples whose leaf folder is among the rarest tenth of the folders by training
  frequency (ties by name, as ``synthetic.rare_concepts``) carry the group ``rare``.

Every choice is a function of ``seed`` and the package contents: the same seed writes the same
bytes.
"""

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tarfile
import warnings
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from open_clip_dissect.errors import InputError
from open_clip_dissect.synthetic import _add_member, _encode, _write_json, rare_concepts, shard_pattern

PACKAGES = ("openclipart-png", "openclipart-svg")
PACKAGE_ROOT = os.path.join("usr", "share", "openclipart")  # where dpkg-deb -x puts png/ and svg/
DESCRIPTION_MAX = 100  # longer descriptions stay out of the caption (they are in the .json)
JUNK_RULES = ("collection", "creator", "contact", "placeholder")
HELD_OUT = ("val", "test")
PIXEL_LIMIT = 40_000_000  # larger PNGs (a few, up to 623 million pixels) are left out, not decoded
UNPACK_HINT = (
    "apt-get download openclipart-png openclipart-svg && dpkg-deb -x openclipart-png_*.deb DIR "
    "&& dpkg-deb -x openclipart-svg_*.deb DIR, then give --from DIR (apt-get update first if apt "
    "cannot locate the packages)"
)

NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "cc": "http://web.resource.org/cc/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
}
COLLECTION_RE = re.compile(r"\b(collection|themes?|icon ?set|cliparts?|icons)\b", re.IGNORECASE)
CONTACT_RE = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+|\bhttps?://|\bwww\.\w", re.IGNORECASE)
PLACEHOLDER_RE = re.compile(
    r"^(untitled( document)?|new document|drawing|image|picture|layer|svg|title|no title|none)[\s\d._-]*$",
    re.IGNORECASE,
)
PERL_REF_RE = re.compile(r"\b(HASH|ARRAY)\(0x[0-9a-f]+\)")  # a Perl reference printed for a text
STOPWORDS = frozenset("and are but for from into its not the this that was with you".split())


def default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "open_clip_dissect", "openclipart")


# --- getting the packages -------------------------------------------------------------------


def _package_root(folder: str) -> Optional[str]:
    """The folder holding png/ and svg/: ``folder`` itself or its usr/share/openclipart."""
    for root in (os.path.join(folder, PACKAGE_ROOT), folder):
        if os.path.isdir(os.path.join(root, "png")) and os.path.isdir(os.path.join(root, "svg")):
            return root
    return None


def package_versions(root: str) -> Dict[str, Optional[str]]:
    """Each package's version from the first line of its changelog.Debian.gz (None if absent)."""
    doc = os.path.join(os.path.dirname(os.path.normpath(root)), "doc")
    versions = {}
    for package in PACKAGES:
        path = os.path.join(doc, package, "changelog.Debian.gz")
        version = None
        if os.path.isfile(path):
            with gzip.open(path, "rt", errors="replace") as f:
                found = re.match(r"\S+ \(([^)]+)\)", f.readline())
            version = found.group(1) if found else None
        versions[package] = version
    return versions


def _run(command: List[str], cwd: str, step: str) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except OSError as exn:
        result = None
        reason = str(exn)
    if result is not None and result.returncode == 0:
        return
    if result is not None:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {result.returncode}"
    raise InputError("--source openclipart", f"{step} failed ({reason}); instead run {UNPACK_HINT}")


def fetch_packages(cache: str) -> str:
    """Download both packages with ``apt-get download`` into ``cache/debs`` and unpack them with
    ``dpkg-deb -x`` into ``cache/unpacked`` (once: a complete unpacking is reused); return the
    folder holding png/ and svg/."""
    unpacked = os.path.join(cache, "unpacked")
    done = os.path.join(unpacked, ".complete")
    if os.path.isfile(done) and _package_root(unpacked):
        return _package_root(unpacked)
    if os.path.exists(cache) and not os.path.isdir(cache):
        raise InputError("--cache", f"{cache} is a file, not a folder")
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise InputError(
            "--source openclipart",
            f"cannot fetch the packages here ({' and '.join(missing)} not found); on a Debian or "
            f"Ubuntu machine run {UNPACK_HINT}",
        )
    debs_dir = os.path.join(cache, "debs")
    os.makedirs(debs_dir, exist_ok=True)
    debs = []
    for package in PACKAGES:
        found = sorted(n for n in os.listdir(debs_dir) if n.startswith(package + "_") and n.endswith(".deb"))
        if not found:
            _run(["apt-get", "download", package], debs_dir, f"apt-get download {package}")
            found = sorted(n for n in os.listdir(debs_dir) if n.startswith(package + "_") and n.endswith(".deb"))
        if not found:
            raise InputError("--source openclipart", f"apt-get download {package} wrote no .deb; run {UNPACK_HINT}")
        debs.append(os.path.join(debs_dir, found[-1]))
    partial = unpacked + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(unpacked, ignore_errors=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", deb, partial], cache, f"dpkg-deb -x {os.path.basename(deb)}")
    with open(os.path.join(partial, ".complete"), "w") as f:
        f.write("\n".join(os.path.basename(d) for d in debs) + "\n")
    os.replace(partial, unpacked)
    root = _package_root(unpacked)
    if root is None:
        raise InputError("--source openclipart", f"{unpacked} holds no {PACKAGE_ROOT}/png and svg; run {UNPACK_HINT}")
    return root


def locate(from_dir: Optional[str] = None, cache: Optional[str] = None) -> str:
    """The folder holding png/ and svg/: under ``from_dir`` (unpacked by the user) or fetched
    into ``cache``."""
    if from_dir is None:
        return fetch_packages(cache or default_cache())
    if not os.path.isdir(from_dir):
        raise InputError("--from", f"{from_dir}: no such folder; unpack the packages there first: {UNPACK_HINT}")
    root = _package_root(from_dir)
    if root is None:
        raise InputError(
            "--from",
            f"{from_dir} holds neither {PACKAGE_ROOT}/png and svg nor png/ and svg/; unpack the "
            f"packages there: {UNPACK_HINT}",
        )
    return root


# --- metadata and captions --------------------------------------------------------------------


def _text(element) -> str:
    return " ".join((element.text or "").split()) if element is not None else ""


@dataclass
class Metadata:
    title: str = ""
    description: str = ""
    tags: List[str] = field(default_factory=list)
    creator: str = ""


def read_metadata(svg_path: str) -> Metadata:
    """The author's title, description, tags and creator from the SVG's ``cc:Work`` (empty when
    the file does not parse or has no metadata)."""
    try:
        root = ET.parse(svg_path).getroot()
    except (ET.ParseError, OSError, UnicodeError):
        return Metadata()
    work = root.find(".//cc:Work", NS)
    if work is None:
        rdf = root.find(".//rdf:RDF", NS)
        work = next(iter(rdf), None) if rdf is not None else None
    if work is None:
        return Metadata()
    tags = [_text(li) for li in work.findall("dc:subject/rdf:Bag/rdf:li", NS)]
    if not tags and work.find("dc:subject", NS) is not None:
        tags = [t.strip() for t in _text(work.find("dc:subject", NS)).split(",")]
    return Metadata(
        _text(work.find("dc:title", NS)),
        _text(work.find("dc:description", NS)),
        [t for t in tags if t],
        _text(work.find("dc:creator/cc:Agent/dc:title", NS)),
    )


def caption_of(meta: Metadata) -> str:
    """Title, then the short description, then the tags (see the module's docstring)."""
    pieces = [meta.title] if meta.title else []
    description = meta.description
    if description and len(description) <= DESCRIPTION_MAX and description.lower() != meta.title.lower():
        pieces.append(description)
    seen, tags = set(), []
    for tag in meta.tags:
        if tag.lower() not in seen:
            seen.add(tag.lower())
            tags.append(tag)
    if tags:
        pieces.append(", ".join(tags))
    caption = ""
    for piece in pieces:
        caption += ("" if not caption else " " if caption[-1] in ".!?" else ". ") + piece
    return caption


def junk_rules(meta: Metadata, caption: str) -> List[str]:
    """The junk rules (``JUNK_RULES``) a sample matches."""
    rules = []
    if COLLECTION_RE.search(meta.title):
        rules.append("collection")
    if len(meta.creator) >= 3 and meta.creator.lower() in meta.title.lower():
        rules.append("creator")
    if CONTACT_RE.search(caption):
        rules.append("contact")
    if not re.search(r"[^\W\d_]", meta.title) or PLACEHOLDER_RE.match(meta.title) or PERL_REF_RE.search(caption):
        rules.append("placeholder")
    return rules


def words(text: str) -> set:
    """Lower-case words of three letters or more (a final s dropped from longer ones), stop words
    aside; underscores, digits and punctuation separate words."""
    out = set()
    for word in re.findall(r"[^\W\d_]+", text.lower()):
        if len(word) >= 3 and word not in STOPWORDS:
            out.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return out


def describes(meta: Metadata, folder: str) -> bool:
    """The title or the description shares a word with the folder path or the tags."""
    return bool(words(f"{meta.title} {meta.description}") & words(f"{folder} {' '.join(meta.tags)}"))


def caption_identity(caption: str) -> str:
    return " ".join(caption.lower().split())


# --- images -----------------------------------------------------------------------------------


def render_image(path: str, size: int, image_format: str = "png") -> Optional[Tuple[bytes, str]]:
    """The encoded image (composited on white, padded to a square, resized) and the SHA-256 of
    its pixels; None when the file cannot be decoded or has more than ``PIXEL_LIMIT`` pixels."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # a size over PIL's limit is refused below, not warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            if image.width * image.height > PIXEL_LIMIT:
                return None
            image.load()
            rgba = image.convert("RGBA")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    side = max(flat.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(flat, ((side - flat.width) // 2, (side - flat.height) // 2))
    final = square.resize((size, size), Image.LANCZOS)
    return _encode(final, image_format), hashlib.sha256(final.tobytes()).hexdigest()


# --- the data set -----------------------------------------------------------------------------


@dataclass
class Item:
    path: str  # relative, without extension: <folder>/<name>
    meta: Metadata
    caption: str
    junk: List[str]
    descriptive: bool
    image: bytes = b""
    digest: str = ""
    duplicates: List[str] = field(default_factory=list)
    unique: bool = True
    noisy: bool = False
    shown_caption: str = ""
    groups: List[str] = field(default_factory=list)

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)

    @property
    def uid(self) -> str:
        return hashlib.md5(f"openclipart:{self.path}".encode()).hexdigest()


def list_pairs(root: str) -> Tuple[List[str], int]:
    """Relative paths (no extension) of the PNGs that have an SVG at the same path, sorted; and
    how many PNGs had none. Links that leave ``root`` are ignored."""
    png_root, real_root = os.path.join(root, "png"), os.path.realpath(root)
    paths, unpaired = [], 0
    for top, dirs, names in os.walk(png_root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            if not name.lower().endswith(".png"):
                continue
            rel = os.path.relpath(os.path.join(top, name), png_root)[: -len(".png")]
            png, svg = os.path.join(png_root, rel + ".png"), os.path.join(root, "svg", rel + ".svg")
            inside = all(os.path.realpath(p).startswith(real_root + os.sep) for p in (png, svg))
            if os.path.isfile(svg) and os.path.isfile(png) and inside:
                paths.append(rel.replace(os.sep, "/"))
            else:
                unpaired += 1
    return sorted(paths), unpaired


def allocate(weights: Dict[str, int], caps: Dict[str, int], total: int) -> Dict[str, int]:
    """``total`` spread over the keys in proportion to ``weights``, each at most its cap (largest
    remainders first, ties by name; what a capped key cannot take goes to the others)."""
    got = {k: 0 for k in weights}
    total = min(total, sum(caps.values()))
    while sum(got.values()) < total:
        left = total - sum(got.values())
        open_ = [k for k in sorted(weights) if got[k] < caps[k]]
        weight = sum(weights[k] for k in open_)  # every open key has a positive weight
        quota = {k: left * weights[k] / weight for k in open_}
        add = {k: min(int(quota[k]), caps[k] - got[k]) for k in open_}
        leftover = left - sum(add.values())
        for k in sorted(open_, key=lambda k: (-(quota[k] - int(quota[k])), k)):
            if leftover and add[k] < caps[k] - got[k]:
                add[k], leftover = add[k] + 1, leftover - 1
        for k, n in add.items():
            got[k] += n
    return got


def shuffle_noise(items: List[Item], noise_rate: float, seed: int) -> None:
    """The synthetic generator's shuffle noise: a random ``noise_rate`` of the items get a
    derangement of their captions (rotating a random order by one)."""
    for item in items:
        item.shown_caption, item.noisy = item.caption, False
    if noise_rate == 0.0 or len(items) < 2:
        return
    rng = random.Random(f"{seed}:train:noise")
    chosen = sorted(rng.sample(range(len(items)), round(noise_rate * len(items))))
    order = chosen[:]
    rng.shuffle(order)
    if len(order) < 2:
        return
    for j, i in enumerate(order):
        items[i].shown_caption = items[order[(j + 1) % len(order)]].caption
    for i in chosen:
        items[i].noisy = items[i].shown_caption != items[i].caption


def record(item: Item, key: str, split: str) -> dict:
    return {
        "key": key,
        "uid": item.uid,
        "split": split,
        "source": "openclipart",
        "path": item.path,
        "folder": item.folder,
        "caption": item.shown_caption,
        "true_caption": item.caption,
        "noisy": item.noisy,
        "noise_kind": "shuffle" if item.noisy else None,
        "junk": bool(item.junk),
        "junk_rules": list(item.junk),
        "descriptive": item.descriptive,
        "unique_caption": item.unique,
        "title": item.meta.title,
        "description": item.meta.description,
        "tags": list(item.meta.tags),
        "creator": item.meta.creator,
        "duplicates": list(item.duplicates),
        "caption_style": "alt",
        "hard": [],
        "groups": list(item.groups),
    }


def write_split(
    out_dir: str, split: str, items: List[Item], shard_size: int, image_format: str, csv: bool
) -> List[str]:
    """``out_dir/<split>/NNNNN.tar`` and ``sizes.json``; with ``csv`` also ``<split>.csv`` and the
    images under ``<split>_images/``."""
    from open_clip_dissect.atomic import atomic_output

    split_dir = os.path.join(out_dir, split)
    os.makedirs(split_dir, exist_ok=True)
    image_dir = os.path.abspath(os.path.join(out_dir, f"{split}_images")) if csv else None
    if image_dir:
        os.makedirs(image_dir, exist_ok=True)
    keyed = [(f"{i:08d}", item) for i, item in enumerate(items)]
    chunks = [keyed[i : i + shard_size] for i in range(0, len(keyed), shard_size)]
    names = [f"{i:05d}.tar" for i in range(len(chunks))]
    for name, chunk in zip(names, chunks):
        with (
            atomic_output(os.path.join(split_dir, name)) as tmp,
            tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar,
        ):
            for key, item in chunk:
                _add_member(tar, f"{key}.{image_format}", item.image)
                _add_member(tar, f"{key}.txt", item.shown_caption.encode())
                _add_member(tar, f"{key}.json", json.dumps(record(item, key, split), sort_keys=True).encode())
                if image_dir:
                    with open(os.path.join(image_dir, f"{key}.{image_format}"), "wb") as f:
                        f.write(item.image)
    _write_json(os.path.join(split_dir, "sizes.json"), {n: len(c) for n, c in zip(names, chunks)})
    if csv:
        import pandas as pd

        rows = [(os.path.join(image_dir, f"{k}.{image_format}"), it.shown_caption, k, it.noisy) for k, it in keyed]
        frame = pd.DataFrame(rows, columns=["filepath", "title", "key", "noisy"])
        with atomic_output(os.path.join(out_dir, f"{split}.csv")) as tmp:
            frame.to_csv(tmp, sep="\t", index=False)
    return [os.path.join(split_dir, n) for n in names]


def _render_job(args):
    return render_image(*args)


def read_items(root: str, image_size: int, image_format: str, workers: int, progress: bool) -> Tuple[list, dict]:
    """Every PNG/SVG pair with its caption, junk rules and image; and the counts of what was
    dropped on the way (unpaired; unreadable: undecodable or over ``PIXEL_LIMIT`` pixels)."""
    from tqdm import tqdm

    paths, unpaired = list_pairs(root)
    items = []
    for path in tqdm(paths, desc="openclipart metadata", unit="item", disable=not progress):
        meta = read_metadata(os.path.join(root, "svg", path + ".svg"))
        caption = caption_of(meta)
        items.append(Item(path, meta, caption, junk_rules(meta, caption), describes(meta, os.path.dirname(path))))
    jobs = [(os.path.join(root, "png", item.path + ".png"), image_size, image_format) for item in items]
    bar = tqdm(total=len(jobs), desc="openclipart images", unit="image", disable=not progress)
    rendered = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(_render_job, jobs, chunksize=64):
                rendered.append(result)
                bar.update()
    else:
        for job in jobs:
            rendered.append(_render_job(job))
            bar.update()
    bar.close()
    kept = []
    for item, result in zip(items, rendered):
        if result is not None:
            item.image, item.digest = result
            kept.append(item)
    return kept, {"listings": len(paths) + unpaired, "pairs": len(paths), "unpaired": unpaired,
                  "unreadable": len(items) - len(kept)}  # fmt: skip


def deduplicate(items: List[Item]) -> List[Item]:
    """One item per distinct image (pixel digest): the smallest path; the others' paths go to its
    ``duplicates``."""
    groups: Dict[str, List[Item]] = {}
    for item in sorted(items, key=lambda it: it.path):
        groups.setdefault(item.digest, []).append(item)
    kept = []
    for group in groups.values():
        group[0].duplicates = [other.path for other in group[1:]]
        kept.append(group[0])
    return sorted(kept, key=lambda it: it.path)


def choose_held_out(items: List[Item], sizes: Dict[str, int], seed: int) -> Dict[str, List[Item]]:
    """Clean, descriptive, uniquely captioned items for ``val`` and ``test``, stratified by leaf
    folder (see the module's docstring); asked sizes beyond what qualifies shrink in proportion."""
    by_folder: Dict[str, List[Item]] = {}
    for item in items:
        by_folder.setdefault(item.folder, []).append(item)
    eligible = {
        f: [it for it in group if not it.junk and it.descriptive and it.unique] for f, group in by_folder.items()
    }
    caps = {f: min(len(eligible[f]), len(by_folder[f]) // 2) for f in by_folder}
    asked = sum(sizes.values())
    available = min(asked, sum(caps.values()))
    per_folder = allocate({f: len(g) for f, g in by_folder.items()}, caps, available)
    rng = random.Random(f"{seed}:openclipart:held-out")
    picks = {f: rng.sample(eligible[f], n) if n else [] for f, n in sorted(per_folder.items())}
    test_n = round(available * sizes["test"] / asked) if asked else 0
    per_test = allocate({f: len(p) for f, p in picks.items()}, {f: len(p) for f, p in picks.items()}, test_n)
    out = {"val": [], "test": []}
    for f in sorted(picks):
        out["test"] += picks[f][: per_test[f]]
        out["val"] += picks[f][per_test[f] :]
    return out


def make_dataset(
    out_dir: str,
    root: str,
    val_size: int = 500,
    test_size: int = 500,
    seed: int = 0,
    noise_rate: float = 0.4,
    shard_size: int = 1000,
    image_size: int = 64,
    image_format: str = "png",
    csv: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write train (noisy at ``noise_rate``), val and test from the unpacked packages at ``root``
    (the folder holding png/ and svg/); return and save the manifest."""
    if not 0.0 <= noise_rate <= 1.0:
        raise InputError("--noise-rate", f"must be in [0, 1], got {noise_rate}")
    for flag, value, least in (("--val-size", val_size, 0), ("--test-size", test_size, 0), ("--shard-size", shard_size, 1),
                               ("--image-size", image_size, 1)):  # fmt: skip
        if value < least:
            raise InputError(flag, f"must be >= {least}, got {value}")
    items, counts = read_items(root, image_size, image_format, workers, progress)
    if not items:
        raise InputError(root, "holds no readable PNG with an SVG at the same path")
    counts["junk_listings"] = {rule: sum(rule in it.junk for it in items) for rule in JUNK_RULES}
    items = deduplicate(items)
    identities: Dict[str, int] = {}
    for item in items:
        identities[caption_identity(item.caption)] = identities.get(caption_identity(item.caption), 0) + 1
    for item in items:
        item.unique = identities[caption_identity(item.caption)] == 1
    held = choose_held_out(items, {"val": val_size, "test": test_size}, seed)
    held_paths = {it.path for split in held.values() for it in split}
    splits = {"train": [it for it in items if it.path not in held_paths], **held}
    for split, members in splits.items():
        random.Random(f"{seed}:openclipart:{split}:order").shuffle(members)
    folders = sorted({it.folder for it in items})
    train_counts = {f: 0 for f in folders}
    for item in splits["train"]:
        train_counts[item.folder] += 1
    rare = rare_concepts(train_counts)
    for item in items:
        item.groups = ["rare"] if item.folder in set(rare) else []
    shuffle_noise(splits["train"], noise_rate, seed)
    for split in HELD_OUT:
        shuffle_noise(splits[split], 0.0, seed)
    top = {}
    for item in items:
        top[item.path.split("/")[0]] = top.get(item.path.split("/")[0], 0) + 1
    counts.update(
        distinct_images=len(items),
        duplicates_dropped=counts["pairs"] - counts["unreadable"] - len(items),
        folders=len(folders),
        top_level_folders=dict(sorted(top.items(), key=lambda kv: (-kv[1], kv[0]))),
        shared_captions=sum(not it.unique for it in items),
        descriptive=sum(it.descriptive for it in items),
        held_out_eligible=sum(not it.junk and it.descriptive and it.unique for it in items),
    )
    manifest = {
        "source": "openclipart",
        "packages": package_versions(root),
        "root": os.path.abspath(root),
        "seed": seed,
        "noise_rate": noise_rate,
        "noise_kind": "shuffle",
        "image_size": image_size,
        "image_format": image_format,
        "caption_rule": f"title. description (<= {DESCRIPTION_MAX} chars, not the title). tags",
        "counts": counts,
        "junk": {rule: sum(rule in it.junk for it in items) for rule in JUNK_RULES},
        "junk_samples": sum(bool(it.junk) for it in items),
        "asked": {"val": val_size, "test": test_size},
        "folder_counts_train": train_counts,
        "rare_folders": rare,
        "splits": {},
    }
    for split, members in splits.items():
        shards = write_split(out_dir, split, members, shard_size, image_format, csv)
        manifest["splits"][split] = {
            "num_samples": len(members),
            "num_noisy": sum(it.noisy for it in members),
            "num_junk": sum(bool(it.junk) for it in members),
            "num_rare": sum("rare" in it.groups for it in members),
            "num_shards": len(shards),
            "pattern": shard_pattern(out_dir, split, len(shards)),
            "csv": os.path.join(out_dir, f"{split}.csv") if csv else None,
        }
    _write_json(os.path.join(out_dir, "manifest.json"), manifest)
    return manifest
