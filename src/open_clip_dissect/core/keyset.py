"""``KeySet``: a set of sample keys read from a file, held as sorted 64-bit key hashes
(8 bytes a key, membership by ``searchsorted``). Used by ``--noisy-keys`` and ``--keep-list``."""

import os
from typing import Iterable

import torch

from open_clip_dissect.core.history import hash_keys
from open_clip_dissect.errors import InputError

KEY_LIST_NAME = "keys.txt"  # what `open-clip-dissect filter` writes into its output folder


def _not_text(path: str, flag: str) -> InputError:
    return InputError(flag, f"{path} is not a text file of keys, one per line")


def check_key_file(path: str, flag: str, probe: int = 1 << 16) -> None:
    """Refuse, before a run writes anything, a key list that is not text: its first ``probe``
    bytes hold a NUL or are not UTF-8 (a character cut at the probe's end is allowed)."""
    with open(path, "rb") as f:
        head = f.read(probe)
    text = None
    for cut in range(4):
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    if text is None or "\x00" in text:
        raise _not_text(path, flag)


def _stripped_keys(lines, path: str, flag: str):
    """The non-empty lines, stripped, in one pass (a key list may hold hundreds of millions)."""
    for line in lines:
        if "\x00" in line:  # a binary file can decode as UTF-8 garbage
            raise _not_text(path, flag)
        line = line.strip()
        if line:
            yield line


class KeySet:
    def __init__(self, keys: Iterable[str]):
        self.hashes = torch.unique(hash_keys(list(keys)))  # sorted, duplicates dropped

    @classmethod
    def from_file(cls, path: str, flag: str) -> "KeySet":
        """One key per line; ``path`` may be a folder holding ``keys.txt`` (a filter's output)."""
        if os.path.isdir(path):
            path = os.path.join(path, KEY_LIST_NAME)
        try:
            with open(path, encoding="utf-8") as f:
                return cls(_stripped_keys(f, path, flag))
        except OSError as exn:
            raise InputError(flag, f"cannot read {path}: {exn}") from None
        except UnicodeDecodeError:
            raise _not_text(path, flag) from None

    def __len__(self) -> int:
        return len(self.hashes)

    def contains(self, hashes: torch.Tensor) -> torch.Tensor:
        """bool per hash."""
        if len(self.hashes) == 0:
            return torch.zeros(len(hashes), dtype=torch.bool)
        pos = torch.searchsorted(self.hashes, hashes).clamp_max(len(self.hashes) - 1)
        return self.hashes[pos] == hashes

    def __contains__(self, key: str) -> bool:
        return bool(self.contains(hash_keys([key]))[0])
