"""vbatch's version, importable without loading the package's modules."""

__version__ = "0.1.0"
