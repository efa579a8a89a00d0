"""The response cache across runs (``--cache-dir``): see :mod:`vbatch.cache.store`."""

from vbatch.cache.store import CacheInfo, ResponseCache, cache_key, deterministic, parse_size

__all__ = ["CacheInfo", "ResponseCache", "cache_key", "deterministic", "parse_size"]
