"""How a store's codec uses its codebooks: codewords used by its codes, codewords equal to zero.

A codeword no frame ever selects is dead weight, and one equal to the zero vector is the usual
sign of a k-means that had nothing to put there (see `extract.calibration`). Recorded when a store
is finished (``summary.codebook_usage``: distinct codes per level over every frame of the codes
stream) and reported by `pipeline inspect`, with the zero codewords counted from the codebooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

CODE_VALUES = 1 << 16
"""Codes are uint16."""


class CodeUsage:
    """Counts the distinct codes of each level over blocks [frames, n_q] passed through :meth:`count`."""

    def __init__(self, n_q: int):
        self.seen = np.zeros((n_q, CODE_VALUES), dtype=bool)
        self.frames = 0

    def count(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            for q in range(block.shape[1]):
                self.seen[q, block[:, q]] = True
            self.frames += len(block)
            yield block

    def to_dict(self) -> dict:
        return {"frames": self.frames, "used": [int(n) for n in self.seen.sum(axis=1)]}


def zero_codewords(codebooks: np.ndarray) -> list[int]:
    """Per level of codebooks [n_q, K, D]: codewords that are exactly the zero vector."""
    return [int(n) for n in (codebooks == 0).all(axis=2).sum(axis=1)]


def report(codebooks: np.ndarray | None, summary: dict, calibration: dict | None) -> dict:
    """Per level: codebook size, zero codewords, codes used by the store's frames and by the
    calibration frames (None where not recorded: stores made before these were recorded)."""
    recorded = (summary or {}).get("codebook_usage") or {}
    calibrated = (calibration or {}).get("codebooks") or []
    n_q = len(codebooks) if codebooks is not None else len(recorded.get("used", []))
    zeros = zero_codewords(codebooks) if codebooks is not None else [None] * n_q
    levels = []
    for q in range(n_q):
        levels.append({
            "level": q + 1,
            "size": int(codebooks.shape[1]) if codebooks is not None else None,
            "zero": zeros[q],
            "used": recorded["used"][q] if q < len(recorded.get("used", [])) else None,
            "used_calibration": calibrated[q]["used"] if q < len(calibrated) else None,
        })
    return {"frames": recorded.get("frames"), "levels": levels}
