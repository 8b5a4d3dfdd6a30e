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
    manifest = synthetic.make_dataset(str(tmp_path), train_size=400, val_size=50, seed=1,
                                      noise_rate=0.4, noise_kind=kind, shard_size=100, progress=False)
    train = _records(tmp_path / "train")
    assert len(train) == 400 and manifest["splits"]["train"]["num_shards"] == 4
    noisy = [r for r in train if r["noisy"]]
    # Exactly 40% are corrupted, less the rare corruptions that happen to describe the scene.
    assert 150 <= len(noisy) <= 160 == round(0.4 * 400)
    assert manifest["splits"]["train"]["num_noisy"] == len(noisy)
    for r in train:
        assert r["txt"] == r["caption"]
        assert (r["caption"] != r["true_caption"]) == r["noisy"]
        assert r["true_caption"] == synthetic.Scene(
            r["background"], tuple(synthetic.Shape(**s) for s in r["shapes"])).caption()
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
    assert image.getpixel((10, 10)) == synthetic.COLORS["red"]      # inside the top-left cell
    assert image.getpixel((52, 52)) == synthetic.BACKGROUNDS["white"]


def test_csv_and_sizes(tmp_path):
    synthetic.make_dataset(str(tmp_path), train_size=30, val_size=5, seed=0, shard_size=20,
                           csv=True, progress=False)
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
