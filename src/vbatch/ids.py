"""Row ids as 8-byte hashes: what the duplicate checks and resume keep instead of the ids, so
that memory stays flat in the number of rows. Shared by every package that checks ids."""

from __future__ import annotations

from array import array

import numpy as np

__all__ = ["hash_array", "id_hash", "repeated_hashes"]


def id_hash(row_id: str) -> int:
    """The 64-bit key of an id (stable within one process)."""
    return hash(row_id)


def repeated_hashes(hashes: np.ndarray) -> np.ndarray:
    """The values that occur more than once in ``hashes``, each once."""
    ordered = np.sort(hashes)
    return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])


def hash_array(hashes: array[int]) -> np.ndarray:
    """Hashes (or fingerprints) collected in an ``array("q")``, as an int64 array without a copy."""
    return np.frombuffer(hashes, dtype=np.int64) if hashes else np.empty(0, np.int64)
