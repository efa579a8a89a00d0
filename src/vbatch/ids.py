"""Row ids as 8-byte hashes: what the duplicate checks and resume keep instead of the ids, so
that memory stays flat in the number of rows. Shared by every package that checks ids."""

from __future__ import annotations

import numpy as np

__all__ = ["id_hash", "repeated_hashes"]


def id_hash(row_id: str) -> int:
    """The 64-bit key of an id (stable within one process)."""
    return hash(row_id)


def repeated_hashes(hashes: np.ndarray) -> np.ndarray:
    """The values that occur more than once in ``hashes``, each once."""
    ordered = np.sort(hashes)
    return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
