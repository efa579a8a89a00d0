"""Rows become requests: the request builder, the check pass, exact token counts, the one
fit rule (does a row fit the context) and the plan of ``vbatch plan``."""
