"""A short fingerprint of a model's weights, so caches scoped by it drop entries when they change."""

from __future__ import annotations

import hashlib
from pathlib import Path

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".xml")


def weights_fingerprint(source: str, revision: str | None = None) -> str:
    """Local folder: hash of its files' names, sizes and modification times. Hub id: id + revision."""
    path = Path(source)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    else:
        digest.update(f"{source}@{revision or 'main'}".encode())
    return digest.hexdigest()[:16]
