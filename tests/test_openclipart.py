"""``make-data --source openclipart`` on a hand-made miniature of the two Debian packages: captions
as the authors wrote them, junk flags, deduplicated images, clean unique held-out splits, noise in
train only, the same bytes for the same seed. Nothing is downloaded."""

import hashlib
import io
import json
import os
import subprocess
import tarfile

import open_clip
import pytest
from conftest import TINY
from PIL import Image

from open_clip_dissect import cli, openclipart
from open_clip_dissect.errors import InputError

SVG = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     width="10" height="10">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title>
    <dc:description>{description}</dc:description>
    <dc:subject><rdf:Bag>{tags}</rdf:Bag></dc:subject>
    <dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent></dc:publisher>
    <dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>
  </cc:Work></rdf:RDF></metadata>
  <rect width="10" height="10"/>
</svg>
"""

FOLDERS = {
    "animals/birds": ["gull", "crow", "owl", "duck", "swan", "robin", "eagle", "heron"],
    "food/fruit": ["apple", "pear", "plum", "peach", "cherry", "lemon", "mango", "melon"],
    "tools": ["hammer", "saw", "wrench", "drill", "chisel", "pliers", "shovel", "rake"],
}


def write_item(root, path, title="", description="", tags=(), creator="Jane Doe", image=None, color=(0, 0, 0)):
    png, svg = root / "png" / f"{path}.png", root / "svg" / f"{path}.svg"
    png.parent.mkdir(parents=True, exist_ok=True)
    svg.parent.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = Image.new("RGB", (30, 20), (255, 255, 255))
        image.paste(color, (5, 5, 25, 15))
    image.save(png)
    svg.write_text(
        SVG.format(
            title=title,
            description=description,
            tags="".join(f"<rdf:li>{t}</rdf:li>" for t in tags),
            creator=creator,
        )
    )


def build_packages(base):
    """A miniature of the unpacked packages: base/usr/share/openclipart/{png,svg}."""
    root = base / "usr" / "share" / "openclipart"
    n = 0
    for folder, names in FOLDERS.items():
        leaf = folder.split("/")[-1]
        for name in names:
            n += 1
            color = (n * 9 % 256, n * 37 % 256, 200 - n * 5)
            write_item(root, f"{folder}/{name}_01", f"A {name.title()}", "", [leaf, name], color=color)
    # a drawing on a transparent background: red square, the rest alpha 0
    clear = Image.new("RGBA", (20, 20), (0, 255, 0, 0))
    clear.paste((255, 0, 0, 255), (5, 5, 15, 15))
    write_item(root, "animals/birds/ghost_01", "Ghost bird", "", ["bird"], image=clear)
    # the same pixels twice, in two folders (the smaller path is kept)
    write_item(root, "animals/birds/twin_01", "Twin bird", "", ["bird"], color=(1, 2, 3))
    write_item(root, "tools/twin_02", "Twin tool", "", ["tools"], color=(1, 2, 3))
    # natural junk
    write_item(root, "tools/flat_01", "Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)", "", ["tools"],
               color=(9, 9, 9))  # fmt: skip
    write_item(root, "tools/jane_01", "Jane Doe", "", ["tools"], color=(8, 8, 8))
    write_item(root, "tools/mail_01", "Tool hook", "jane@example.org", ["tools"], color=(7, 7, 7))
    write_item(root, "tools/blank_01", "", "", ["tools"], color=(6, 6, 6))
    # two different images with one caption: never held out
    write_item(root, "food/fruit/card_01", "card", "", ["card"], color=(5, 5, 5))
    write_item(root, "food/fruit/card_02", "card", "", ["card"], color=(4, 4, 4))
    # a listing with a PNG but no SVG is not a pair
    Image.new("RGB", (4, 4)).save(root / "png" / "tools" / "lonely.png")
    (root / "png" / "tools" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    base = tmp_path_factory.mktemp("openclipart")
    build_packages(base)
    return base


def make(out, packages, seed=3, noise_rate=0.5, **kw):
    root = openclipart.locate(str(packages))
    kw = {"val_size": 3, "test_size": 3, "image_size": 16, "shard_size": 10, "progress": False, **kw}
    return openclipart.make_dataset(str(out), root, seed=seed, noise_rate=noise_rate, **kw)


def split_samples(out, split):
    """Each sample of a split's shards: its json record, its .txt and the pixels of its image."""
    samples = []
    for name in sorted(os.listdir(out / split)):
        if name.endswith(".tar"):
            with tarfile.open(out / split / name) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            for member, payload in members.items():
                if member.endswith(".json"):
                    key = member[:-5]
                    record = json.loads(payload)
                    record["txt"] = members[key + ".txt"].decode()
                    record["pixels"] = Image.open(io.BytesIO(members[key + ".png"])).convert("RGB")
                    samples.append(record)
    return samples


def digest(folder):
    h = hashlib.sha256()
    for top, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            if name.endswith(".tar") or name == "sizes.json":
                h.update(name.encode() + open(os.path.join(top, name), "rb").read())
    return h.hexdigest()


def test_caption_rule_and_junk_rules(tmp_path):
    write_item(tmp_path, "x/a", "Soft Couch", "A blue couch", ["furniture", "", "Furniture", "home"])
    meta = openclipart.read_metadata(str(tmp_path / "svg" / "x" / "a.svg"))
    assert meta == openclipart.Metadata("Soft Couch", "A blue couch", ["furniture", "Furniture", "home"], "Jane Doe")
    assert openclipart.caption_of(meta) == "Soft Couch. A blue couch. furniture, home"
    long = openclipart.Metadata("Flag.", "x" * (openclipart.DESCRIPTION_MAX + 1), ["flag"])
    assert openclipart.caption_of(long) == "Flag. flag"  # a long description stays out
    assert openclipart.caption_of(openclipart.Metadata("Gull", "gull")) == "Gull"  # the title again
    assert openclipart.caption_of(openclipart.Metadata()) == ""
    rules = openclipart.junk_rules
    assert rules(openclipart.Metadata("Lemon SVG theme"), "Lemon SVG theme") == ["collection"]
    assert rules(openclipart.Metadata("Clipart by Nicu Buculei - pear", creator="Nicu Buculei"), "") == [
        "collection",
        "creator",
    ]
    assert rules(openclipart.Metadata("pansement"), "pansement. jean.victor@gmail.com") == ["contact"]
    assert rules(openclipart.Metadata("AIGA"), "AIGA. EPS converted from http://aiga.org") == ["contact"]
    assert rules(openclipart.Metadata("Iceland"), "Iceland. HASH(0x852c614). flag") == ["placeholder"]
    for title in ("", "Untitled", "New document 1", "1234"):
        assert rules(openclipart.Metadata(title), title) == ["placeholder"]
    assert rules(openclipart.Metadata("A pear", creator="Jo"), "A pear. fruit") == []
    assert openclipart.describes(openclipart.Metadata("Red Stars"), "shapes/star")  # plural and folder
    assert not openclipart.describes(openclipart.Metadata("Soft Couch", tags=["furniture"]), "buildings")
    (tmp_path / "broken.svg").write_text("<svg><metadata>")
    assert openclipart.read_metadata(str(tmp_path / "broken.svg")) == openclipart.Metadata()


def test_allocation_is_proportional_and_capped():
    assert openclipart.allocate({"a": 6, "b": 3, "c": 1}, {"a": 9, "b": 9, "c": 9}, 5) == {"a": 3, "b": 2, "c": 0}
    assert openclipart.allocate({"a": 6, "b": 3, "c": 1}, {"a": 1, "b": 9, "c": 9}, 5) == {"a": 1, "b": 3, "c": 1}
    assert openclipart.allocate({"a": 6, "b": 3}, {"a": 1, "b": 1}, 5) == {"a": 1, "b": 1}


def test_the_data_set(packages, tmp_path):
    manifest = make(tmp_path, packages)
    splits = {split: split_samples(tmp_path, split) for split in ("train", "val", "test")}
    every = [r for samples in splits.values() for r in samples]
    counts = manifest["counts"]
    assert counts["listings"] == 24 + 9 + 1 and counts["unpaired"] == 1 and counts["unreadable"] == 0
    assert counts["distinct_images"] == len(every) == 24 + 8 and counts["duplicates_dropped"] == 1
    assert manifest["packages"] == {"openclipart-png": None, "openclipart-svg": None}
    by_path = {r["path"]: r for r in every}
    assert "tools/twin_02" not in by_path and by_path["animals/birds/twin_01"]["duplicates"] == ["tools/twin_02"]
    # captions as written, junk by rule
    assert by_path["food/fruit/apple_01"]["true_caption"] == "A Apple. fruit, apple"
    assert by_path["tools/mail_01"]["true_caption"] == "Tool hook. jane@example.org. tools"
    assert {p: r["junk_rules"] for p, r in by_path.items() if r["junk"]} == {
        "tools/flat_01": ["collection"],
        "tools/jane_01": ["creator"],
        "tools/mail_01": ["contact"],
        "tools/blank_01": ["placeholder"],
    }
    assert manifest["junk"] == {"collection": 1, "creator": 1, "contact": 1, "placeholder": 1}
    assert (
        by_path["tools/blank_01"]["true_caption"] == "tools" and by_path["food/fruit/card_01"]["folder"] == "food/fruit"
    )
    # the transparent drawing lies on white
    ghost = by_path["animals/birds/ghost_01"]["pixels"]
    assert ghost.size == (16, 16) and ghost.getpixel((0, 0)) == (255, 255, 255)
    assert ghost.getpixel((8, 8))[0] > 200 and ghost.getpixel((8, 8))[1] < 60
    # no image twice, across splits
    hashes = [hashlib.sha256(r["pixels"].tobytes()).hexdigest() for r in every]
    assert len(set(hashes)) == len(hashes)
    # held out: clean, descriptive, a caption nowhere else, stratified by folder
    train_captions = [r["true_caption"].lower() for r in splits["train"]]
    for split in ("val", "test"):
        assert len(splits[split]) == 3 and manifest["splits"][split]["num_samples"] == 3
        for r in splits[split]:
            assert not r["junk"] and not r["noisy"] and r["descriptive"] and r["unique_caption"]
            assert r["caption"] == r["txt"] == r["true_caption"] and r["caption"].lower() not in train_captions
        assert {r["folder"] for r in splits[split]} == set(FOLDERS)
    assert not {r["path"] for r in splits["val"]} & {r["path"] for r in splits["test"]}
    assert by_path["food/fruit/card_01"]["split"] == by_path["food/fruit/card_02"]["split"] == "train"
    # shuffle noise in train only, at the asked rate, labelled
    train = splits["train"]
    noisy = [r for r in train if r["noisy"]]
    assert len(noisy) == manifest["splits"]["train"]["num_noisy"] and 0 < len(noisy) <= round(0.5 * len(train))
    assert len(noisy) >= round(0.5 * len(train)) - 2  # a swap within the shared "card" caption is no noise
    true_captions = {r["true_caption"] for r in train}
    for r in train:
        assert r["txt"] == r["caption"] and (r["caption"] != r["true_caption"]) == r["noisy"]
        assert r["noise_kind"] == ("shuffle" if r["noisy"] else None) and r["caption"] in true_captions
    assert all(r["groups"] in ([], ["rare"]) for r in every)
    assert {r["folder"] for r in every if "rare" in r["groups"]} == set(manifest["rare_folders"])
    with open(tmp_path / "train" / "sizes.json") as f:
        assert sum(json.load(f).values()) == len(train)


def test_same_seed_same_bytes(packages, tmp_path):
    make(tmp_path / "a", packages, seed=5)
    make(tmp_path / "b", packages, seed=5, workers=2)
    make(tmp_path / "c", packages, seed=6)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_held_out_sizes_are_capped_by_what_qualifies(packages, tmp_path):
    manifest = make(tmp_path, packages, val_size=100, test_size=100, noise_rate=0.0, csv=True)
    sizes = {s: manifest["splits"][s]["num_samples"] for s in ("val", "test")}
    # at most half of each folder: 5 of birds (10 images), 5 of fruit (10), 6 of tools (12)
    assert sizes["val"] + sizes["test"] == 16 and abs(sizes["val"] - sizes["test"]) <= 1
    assert manifest["splits"]["train"]["num_noisy"] == 0
    assert (tmp_path / "train.csv").read_text().splitlines()[0] == "filepath\ttitle\tkey\tnoisy"


def test_the_shards_feed_the_training_loader(packages, tmp_path):
    from open_clip_dissect.openclip.launch import params
    from open_clip_dissect.openclip.pipeline import keyed_data

    manifest = make(tmp_path, packages, shard_size=8)
    train = split_samples(tmp_path, "train")
    argv = ["--model", TINY, "--batch-size", "4", "--workers", "0", "--precision", "fp32"]
    args = params.parse_args([*argv, "--train-data", manifest["splits"]["train"]["pattern"], "--dataset-type",
                              "webdataset"])  # fmt: skip
    args.world_size, args.rank, args.distributed = 1, 0, False
    preprocess = open_clip.image_transform(32, is_train=True)
    info = keyed_data.get_data(args, (preprocess, preprocess), epoch=0, tokenizer=open_clip.get_tokenizer(TINY))
    info["train"].set_epoch(0)
    labels = {}
    for images, texts, keys, _, noisy in info["train"].dataloader:
        assert images.shape[1:] == (3, 32, 32) and texts.shape[0] == len(keys)
        labels.update({k.rsplit("/", 1)[1]: int(n) for k, n in zip(keys, noisy)})
    truth = {r["key"]: int(r["noisy"]) for r in train}
    assert labels == {k: truth[k] for k in labels} and len(labels) >= len(train) - 4  # whole batches only


def test_missing_packages_are_one_line(tmp_path, capsys, monkeypatch):
    argv = ["make-data", "--source", "openclipart", "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--from", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("open-clip-dissect make-data: error: --from: ")
    assert "apt-get download openclipart-png openclipart-svg" in err[0] and "dpkg-deb -x" in err[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="^--from: .* holds neither"):
        openclipart.locate(str(tmp_path / "empty"))
    # fetching: no apt-get here, or a failing one, is one line that says what to do
    monkeypatch.setattr(openclipart.shutil, "which", lambda tool: None)
    with pytest.raises(InputError, match="apt-get and dpkg-deb not found.*--from DIR"):
        openclipart.locate(cache=str(tmp_path / "cache"))
    monkeypatch.setattr(openclipart.shutil, "which", lambda tool: "/usr/bin/" + tool)
    failed = subprocess.CompletedProcess([], 100, "", "E: Unable to locate package openclipart-png\n")
    monkeypatch.setattr(openclipart.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(InputError, match="apt-get download openclipart-png failed \\(E: Unable to locate"):
        openclipart.locate(cache=str(tmp_path / "cache"))
    assert not (tmp_path / "out").exists()


def test_flags_of_the_synthetic_generator_are_refused(tmp_path, capsys):
    for flags, subject in (
        (["--train-size", "10"], "--train-size"),
        (["--preset", "web"], "--preset"),
        (["--noise-kind", "partial"], "--noise-kind"),
        (["--val-size", "-1"], "--val-size"),
    ):
        assert cli.main(["make-data", "--source", "openclipart", "--out", str(tmp_path), *flags]) == 2
        assert capsys.readouterr().err.startswith(f"open-clip-dissect make-data: error: {subject}: ")
    assert cli.main(["make-data", "--out", str(tmp_path), "--from", str(tmp_path)]) == 2
    assert "--from: goes with --source openclipart" in capsys.readouterr().err
