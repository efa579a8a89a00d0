"""Where requests go: the backend seam (running servers or vLLM servers vbatch starts),
the vLLM process, its options, its guard, the default model and ``vbatch serve``."""
