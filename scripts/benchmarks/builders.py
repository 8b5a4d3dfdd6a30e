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

A new data source (real image-text pairs, say) is one more entry of ``BUILDERS``.
"""

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


BUILDERS = {"synthetic": DataBuilder(make=synthetic, samples=record_measures.sample_table)}


def builder(spec):
    """The builder a regime names (``builder=``, default ``"synthetic"``)."""
    name = spec.get("builder", "synthetic")
    if name not in BUILDERS:
        raise ValueError(f"unknown data builder {name!r}; known: {', '.join(BUILDERS)}")
    return BUILDERS[name]
