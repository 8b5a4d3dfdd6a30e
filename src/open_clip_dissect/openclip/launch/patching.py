"""Scoped replacement of module attributes: how this package hooks into open_clip_train.

Every patch is applied inside a ``with`` block by our own entry point or loader factory and
undone on exit, so importing ``open_clip_dissect`` changes nothing in OpenCLIP.
"""

from contextlib import contextmanager


@contextmanager
def swapped(module, **replacements):
    """Set ``module.<name> = value`` for each keyword for the duration of the block."""
    saved = {name: getattr(module, name) for name in replacements}
    for name, value in replacements.items():
        setattr(module, name, value)
    try:
        yield module
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
