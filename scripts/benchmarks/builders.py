"""Data builders: how a regime's data set is made. A regime names its builder (``builder=``; the
default is ``"synthetic"``) and describes its data in ``data=`` (the builder's arguments).

A builder is two functions:
- ``make(root, regime, spec, seed)``: the data set a run of ``seed`` trains on, made once under
  ``<root>/data/`` and then read from there; it returns the manifest, whose ``splits`` name a
  webdataset ``pattern`` for ``train``, ``test`` (the reported retrieval split) and ``val`` (the
  split an ``auto`` warm-up watches). The cache's name must change with every argument that
  changes the bytes (``data.make_data`` does this for the generator);
- ``samples(data_dir)``: one row per training sample, indexed by its key (the last path component
  of the record keys), with the columns the record measures read: ``noisy``, ``noise_kind``,
  ``style``, ``hard`` and ``rare`` (``record_measures.sample_table`` reads the generator's).

A new data source is one more entry of ``BUILDERS``; ``openclipart`` (real pairs, the ``real``
profile) is one.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable

from . import data, record_measures


@dataclass(frozen=True)
class DataBuilder:
    make: Callable  # (root, regime, spec, seed) -> manifest
    samples: Callable  # (data_dir) -> pandas.DataFrame of the per-sample labels


def synthetic(root, regime, spec, seed):
    """The data set a run of ``seed`` trains on: the regime's one fixed draw where it names a
    ``data_seed`` (training seeds then vary initialisation and order only), else the seed's own."""
    data_seed = spec.get("data_seed", seed)
    return data.make_data(root, regime + f"-d{data_seed}", data.data_arguments(seed=data_seed, **spec["data"]))


def openclipart(root, regime, spec, seed):
    """Real pairs (``make-data --source openclipart``): the packages fetched once into the user's
    cache (or read from ``$OPENCLIPART_FROM``, a folder where they are unpacked), the data set
    written under ``<root>/data/``, named after the regime, its arguments, the packages'
    versions and the builder's code (a changed caption or junk rule is a new data set)."""
    from open_clip_dissect import openclipart as source

    data_seed = spec.get("data_seed", seed)
    arguments = dict(spec["data"], seed=data_seed)
    package_root = source.locate(os.environ.get("OPENCLIPART_FROM"))
    with open(source.__file__, "rb") as f:
        code = hashlib.sha256(f.read()).hexdigest()
    identity = dict(arguments, packages=source.package_versions(package_root), code=code)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    out = os.path.join(
        root, "data", f"openclipart-d{data_seed}-{digest}"
    )  # one set for every regime of these arguments
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            return json.load(f)
    return source.make_dataset(
        out,
        package_root,
        val_size=arguments["val"],
        test_size=arguments["test"],
        seed=data_seed,
        noise_rate=arguments["noise_rate"],
        image_size=arguments["image_size"],
        workers=2,
        progress=False,
    )


BUILDERS = {
    "synthetic": DataBuilder(make=synthetic, samples=record_measures.sample_table),
    "openclipart": DataBuilder(make=openclipart, samples=record_measures.sample_table),
}


def builder(spec):
    """The builder a regime names (``builder=``, default ``"synthetic"``)."""
    name = spec.get("builder", "synthetic")
    if name not in BUILDERS:
        raise ValueError(f"unknown data builder {name!r}; known: {', '.join(BUILDERS)}")
    return BUILDERS[name]
