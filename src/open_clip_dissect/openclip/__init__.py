"""The OpenCLIP adapter: everything that imports ``open_clip`` or ``open_clip_train``."""
