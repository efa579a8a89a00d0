"""``python -m vbatch``."""

from vbatch.cli import main

main()
