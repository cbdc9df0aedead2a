"""Binary masks as COCO's run-length encoding: `{"size": [height, width], "counts": "<string>"}`.

The pixels are read column by column (Fortran order), as alternating runs of 0s and 1s starting
with 0s; the counts are written in COCO's compressed string form (each count as the difference from
the count two before it, in 5-bit groups offset by 48). The same dict goes to pycocotools'
`mask.decode` / `mask.area` unchanged (after `counts.encode()`, as pycocotools takes bytes).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def runs(mask: np.ndarray) -> list[int]:
    """The run lengths of a 2-D mask, column by column, starting with (possibly zero) 0s."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    lengths = np.diff(bounds).tolist()
    return [0, *lengths] if flat[0] else lengths


def _to_string(counts: list[int]) -> str:
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _from_string(text: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            if p >= len(text):
                raise ValueError("an RLE string ends inside a count")
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE of a 2-D mask (anything non-zero is in the mask)."""
    height, width = np.asarray(mask).shape
    return {"size": [int(height), int(width)], "counts": _to_string(runs(mask))}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """The boolean mask (height, width) of a COCO RLE (string or list counts)."""
    height, width = rle["size"]
    counts = rle["counts"]
    counts = _from_string(counts) if isinstance(counts, str) else list(counts)
    if any(c < 0 for c in counts) or sum(counts) != height * width:
        raise ValueError(f"the RLE's counts do not cover a {height}x{width} mask")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape((height, width), order="F")


def area(rle: dict[str, Any]) -> int:
    """Pixels in the mask (the sum of its 1-runs), without decoding it."""
    counts = rle["counts"]
    counts = _from_string(counts) if isinstance(counts, str) else list(counts)
    return int(sum(counts[1::2]))
