"""Starting a run: the entry point, flags, validation before anything is written, devices, and the scoped patches of open_clip_train."""
