"""The OpenCLIP adapter: everything that imports ``open_clip`` or ``open_clip_train``.

- ``launch``: ``python -m open_clip_dissect.main``, our flags on top of OpenCLIP's, the checks
  made before anything is written, devices, the scoped patches and the list of every upstream
  name we use (``launch.upstream``), and the calls a patched fork makes;
- ``training``: the selecting loader, the training loop around upstream's ``train_one_epoch``,
  loss weights, timing, and the per-sample ``--selection-record``;
- ``pipeline``: webdataset/CSV/synthetic data whose batches carry sample keys, and the safe
  decoding of shard members;
- ``state``: the selection state saved beside OpenCLIP's checkpoints, and finding checkpoints;
- ``evaluation``: retrieval R@k on held-out data, CLIP_benchmark and the results table;
- ``models``: the package's tiny model configs and frozen models read from local weights.
"""
