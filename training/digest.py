"""Content digests of files: how reports name the exact checkpoint or source they read, and how the corpus
recognises a held-out photograph under another name."""
from __future__ import annotations

import hashlib


def sha256_of(path: str) -> str:
    """The SHA-256 of a file's bytes as hex, read in 1 MiB chunks (checkpoints can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
