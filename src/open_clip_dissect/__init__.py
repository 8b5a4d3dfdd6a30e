"""open_clip_dissect: online sample selection for OpenCLIP training.

Layers, by what each may import:

- ``core``: strategies, the history store, the ``Selector`` engine, the audit, key sets
  (torch and numpy only; usable from any training loop);
- ``distributed``: several processes (the communicator, the sharded history store and the
  exchange of kept samples between ranks);
- ``openclip``: the OpenCLIP adapter, in five parts: ``launch`` (entry point, flags, scoped
  patching, devices, fork support), ``training`` (the selecting loader and the training step's
  hooks), ``pipeline`` (keyed data), ``state`` (selection state and checkpoints) and
  ``evaluation`` (retrieval, CLIP_benchmark); ``models`` holds the tiny configs and frozen models;
- ``offline``: embeddings, oracle scores and keep-lists.

Importing the package does nothing else: OpenCLIP is patched only inside
``python -m open_clip_dissect.main``, and the tiny model configs are registered by the entry
points (``openclip.models.configs.register_model_configs``).
"""

__version__ = "0.1.0"
