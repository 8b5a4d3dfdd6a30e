"""open_clip_dissect: online sample selection for OpenCLIP training.

Layers, by what each may import:

- ``core``: strategies, the history store, the ``Selector`` engine, the audit, key sets
  (torch and numpy only; usable from any training loop);
- ``dist``: several processes (the sharded history store and the rank exchange);
- ``openclip``: the OpenCLIP adapter (entry point, flags, scoped patching, keyed data, the
  selecting loader, weighted loss, fork support, state files, evaluation);
- ``offline``: embeddings, oracle scores and keep-lists.

Importing the package does nothing else: OpenCLIP is patched only inside
``python -m open_clip_dissect.main``, and the tiny model configs are registered by the entry
points (``openclip.configs.register_model_configs``).
"""

__version__ = "0.1.0"
