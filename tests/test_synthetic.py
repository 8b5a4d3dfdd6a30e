"""The synthetic generator: deterministic bytes, honest noise labels, clean validation split."""

import hashlib
import io
import json
import os
import tarfile

import pandas as pd
import pytest
from PIL import Image

from open_clip_dissect import synthetic


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith(".tar") or name == "sizes.json":  # manifest.json holds paths
                with open(os.path.join(dirpath, name), "rb") as f:
                    h.update(name.encode() + f.read())
    return h.hexdigest()


def _records(pattern_dir):
    out = []
    for name in sorted(os.listdir(pattern_dir)):
        if name.endswith(".tar"):
            with tarfile.open(os.path.join(pattern_dir, name)) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            for fname, payload in members.items():
                if fname.endswith(".json"):
                    key = fname[:-5]
                    record = json.loads(payload)
                    record["txt"] = members[key + ".txt"].decode()
                    record["image"] = Image.open(io.BytesIO(members[key + ".png"]))
                    out.append(record)
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kw = dict(train_size=60, val_size=10, noise_rate=0.4, shard_size=25, progress=False)
    synthetic.make_dataset(str(tmp_path / "a"), seed=3, **kw)
    synthetic.make_dataset(str(tmp_path / "b"), seed=3, workers=2, **kw)
    synthetic.make_dataset(str(tmp_path / "c"), seed=4, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


@pytest.mark.parametrize("kind", ["shuffle", "partial"])
def test_noise_labels_are_true(tmp_path, kind):
    manifest = synthetic.make_dataset(
        str(tmp_path),
        train_size=400,
        val_size=50,
        seed=1,
        noise_rate=0.4,
        noise_kind=kind,
        shard_size=100,
        progress=False,
    )
    train = _records(tmp_path / "train")
    assert len(train) == 400 and manifest["splits"]["train"]["num_shards"] == 4
    noisy = [r for r in train if r["noisy"]]
    # Exactly 40% are corrupted, less the rare corruptions that happen to describe the scene.
    assert 150 <= len(noisy) <= 160 == round(0.4 * 400)
    assert manifest["splits"]["train"]["num_noisy"] == len(noisy)
    for r in train:
        assert r["txt"] == r["caption"]
        assert (r["caption"] != r["true_caption"]) == r["noisy"]
        assert (
            r["true_caption"]
            == synthetic.Scene(r["background"], tuple(synthetic.Shape(**s) for s in r["shapes"])).caption()
        )
        assert len(r["uid"]) == 32
    captions = {r["caption"] for r in train}
    true_captions = {r["true_caption"] for r in train}
    if kind == "shuffle":  # a shuffled caption is some other sample's true caption
        assert all(r["caption"] in true_captions for r in noisy)
    else:  # a partial corruption keeps the number of shapes and the background
        for r in noisy:
            assert r["caption"].count(" a ") == r["true_caption"].count(" a ")
            assert r["caption"].endswith(f"on a {r['background']} background")
    assert len(captions) > 300
    val = _records(tmp_path / "val")
    assert len(val) == 50 and not any(r["noisy"] for r in val)


def test_images_show_the_true_scene():
    scene = synthetic.Scene("white", (synthetic.Shape("square", "red", "large", "top left"),))
    image = synthetic.render(scene, 63)
    assert image.getpixel((10, 10)) == synthetic.COLORS["red"]  # inside the top-left cell
    assert image.getpixel((52, 52)) == synthetic.BACKGROUNDS["white"]


def test_csv_and_sizes(tmp_path):
    synthetic.make_dataset(str(tmp_path), train_size=30, val_size=5, seed=0, shard_size=20, csv=True, progress=False)
    frame = pd.read_csv(tmp_path / "train.csv", sep="\t", dtype={"key": str})
    assert list(frame.columns) == ["filepath", "title", "key", "noisy"]
    assert len(frame) == 30 and all(os.path.isfile(p) for p in frame.filepath)
    with open(tmp_path / "train" / "sizes.json") as f:
        assert json.load(f) == {"00000.tar": 20, "00001.tar": 10}


def test_bad_arguments():
    with pytest.raises(ValueError, match="--noise-rate"):
        synthetic.make_samples("train", 10, 0, noise_rate=1.5)
    with pytest.raises(ValueError, match="--noise-kind"):
        synthetic.make_samples("train", 10, 0, noise_rate=0.5, noise_kind="swap")


WEB = synthetic.Difficulty(**{k: v for k, v in synthetic.PRESETS["web"].items() if not k.startswith("noise")})


def test_plain_generator_is_unchanged_by_the_difficulty_code():
    """The defaults draw exactly the scenes and captions of the plain generator."""
    plain = synthetic.make_samples("train", 200, 5, noise_rate=0.4, noise_kind="partial")
    explicit = synthetic.make_samples(
        "train", 200, 5, noise_rate=0.4, noise_kind="partial", difficulty=synthetic.Difficulty()
    )
    assert [(s.scene, s.caption, s.noisy) for s in plain] == [(s.scene, s.caption, s.noisy) for s in explicit]
    assert all(s.style == "full" and not s.hard and not s.extra for s in plain)


def test_web_preset_draws_what_it_says(tmp_path):
    manifest = synthetic.make_dataset(
        str(tmp_path),
        train_size=3000,
        val_size=200,
        test_size=300,
        seed=2,
        noise_rate=0.4,
        noise_kind="mixed",
        shard_size=1000,
        progress=False,
        difficulty=WEB,
        preset="web",
    )
    train = synthetic.read_sample_records(str(tmp_path / "train"))
    assert manifest["difficulty"]["concept_zipf"] == 1.2 and manifest["preset"] == "web"
    # Zipf 1.2 over 24 concepts: the most frequent concept is far above the rarest.
    counts = sorted(manifest["concept_counts"].values())
    assert counts[-1] > 20 * counts[0] and len(manifest["rare_concepts"]) == 3
    styles = manifest["splits"]["train"]["caption_styles"]
    assert abs(styles["alt"] / 3000 - 0.6) < 0.04 and abs(styles["partial"] / 3000 - 0.2) < 0.04
    assert abs(manifest["splits"]["train"]["hard_images"] / 3000 - 0.5) < 0.04
    kinds = {r["noise_kind"] for r in train if r["noisy"]}
    assert kinds == {"shuffle", "partial"}  # mixed noise
    assert {kind for r in train for kind in r["hard"]} == {"distractors", "texture"}  # the preset's kinds
    # Noise labels are true: a clean caption describes the image, a noisy one does not.
    for r in train[:600]:
        spec = _spec_of(r)
        shapes = tuple(synthetic.Shape(**s) for s in r["shapes"] + r["distractors"])
        assert spec.describes(r["background"], shapes) == (not r["noisy"]), r
        if r["caption_style"] == "alt" and not r["noisy"]:
            assert len(r["caption_concepts"]) == 1
    rare = set(manifest["rare_concepts"])
    assert all(("rare" in r["groups"]) == bool(rare & set(r["caption_concepts"])) for r in train)
    # The test split stays balanced over concepts, clean, fully captioned and plainly drawn.
    test = synthetic.read_sample_records(str(tmp_path / "test"))
    assert all(r["caption_style"] == "full" and not r["hard"] and not r["noisy"] for r in test)
    test_counts = {}
    for r in test:
        for c in r["concepts"]:
            test_counts[c] = test_counts.get(c, 0) + 1
    assert max(test_counts.values()) < 3 * min(test_counts.values())
    assert all(("rare" in r["groups"]) == bool(rare & set(r["concepts"])) for r in test)
    val = synthetic.read_sample_records(str(tmp_path / "val"))
    assert not any(r["noisy"] for r in val) and {r["caption_style"] for r in val} == {"full", "partial", "alt"}


def _spec_of(record):
    """The caption's spec, parsed back from its words (alt and partial captions name colour and shape)."""
    mentions = []
    for part in record["caption"].split(", on a ")[0].replace(" and ", ", ").split(", "):
        words = part.split(" ")
        size = words[1] if words[1] in synthetic.SIZES else None
        color, shape = words[2:4] if size else words[1:3]
        rest = " ".join(words[4:] if size else words[3:])
        position = next((p for p in synthetic.POSITIONS if rest and synthetic.where(p) == rest), None)
        mentions.append(synthetic.Mention(shape, color, size, position))
    background = record["caption"].split(", on a ")[1].split(" ")[0] if ", on a " in record["caption"] else None
    return synthetic.CaptionSpec(tuple(mentions), background)


def test_hard_images_differ_from_plain_ones_and_noise_is_seeded():
    scene = synthetic.Scene("white", (synthetic.Shape("square", "red", "large", "center"),))
    plain = synthetic.render(scene, 63)
    low = synthetic.render(scene, 63, hard=("low_contrast",))
    assert plain.getpixel((31, 31)) == synthetic.COLORS["red"] and low.getpixel((31, 31)) != synthetic.COLORS["red"]
    small = synthetic.render(scene, 63, hard=("small",))
    assert small.getpixel((23, 23)) == synthetic.BACKGROUNDS["white"] != plain.getpixel((23, 23))
    textured = synthetic.render(scene, 63, hard=("texture",), noise_seed="a")
    assert len(textured.getcolors(4096)) > 2
    noisy_a = synthetic.render(scene, 63, pixel_noise=25, noise_seed="a")
    assert noisy_a.tobytes() == synthetic.render(scene, 63, pixel_noise=25, noise_seed="a").tobytes()
    assert noisy_a.tobytes() != synthetic.render(scene, 63, pixel_noise=25, noise_seed="b").tobytes()


def test_difficulty_values_are_checked():
    for kwargs, flag in (
        (dict(alt_text_rate=1.5), "--alt-text-rate"),
        (dict(concept_zipf=-1), "--concept-zipf"),
        (dict(alt_text_rate=0.7, partial_caption_rate=0.5), "--alt-text-rate"),
        (dict(pixel_noise=-3), "--pixel-noise"),
    ):
        with pytest.raises(ValueError, match=flag):
            synthetic.make_samples("train", 4, 0, difficulty=synthetic.Difficulty(**kwargs))
    assert synthetic.resolve_settings("web", alt_text_rate=0.3)["alt_text_rate"] == 0.3
    assert synthetic.resolve_settings(None)["noise_kind"] == "shuffle"


def test_colour_words_as_concepts_make_rare_words(tmp_path):
    """--colors 16 --concept-unit color: the Zipf law runs over colour words, so the rarest colours
    are rare words; every colour appears in the balanced test split."""
    difficulty = synthetic.Difficulty(concept_zipf=1.6, alt_text_rate=0.6, colors=16, concept_unit="color")
    manifest = synthetic.make_dataset(
        str(tmp_path),
        train_size=1500,
        val_size=0,
        test_size=400,
        seed=1,
        noise_rate=0.4,
        shard_size=1500,
        progress=False,
        difficulty=difficulty,
    )
    counts = manifest["concept_counts"]
    assert sorted(counts) == sorted(synthetic.palette(16)) and len(manifest["rare_concepts"]) == 2
    assert max(counts.values()) > 30 * min(counts.values())
    train = synthetic.read_sample_records(str(tmp_path / "train"))
    rare = set(manifest["rare_concepts"])
    assert all(("rare" in r["groups"]) == bool(rare & set(r["caption_concepts"])) for r in train)
    assert all(c in synthetic.ALL_COLORS for r in train for c in r["concepts"])
    test = synthetic.read_sample_records(str(tmp_path / "test"))
    assert {s["color"] for r in test for s in r["shapes"]} == set(synthetic.palette(16))
    with pytest.raises(ValueError, match="--colors"):
        synthetic.make_samples("train", 2, 0, difficulty=synthetic.Difficulty(colors=17))
