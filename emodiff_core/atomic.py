"""Write a file completely or not at all: into a private temporary name beside the target, then renamed."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_output(path: str, suffix: str = ".partial") -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` (with the usual
    umask-derived mode, not mkstemp's private 0600), on any error it is removed and ``path`` is untouched."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
