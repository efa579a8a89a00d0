"""Test doubles of a vLLM server: its behaviour, as a process (``vbatch simulate``) and as
an in-process transport. Never imported by a run."""
