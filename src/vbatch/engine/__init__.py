"""A run: the job (prepare, execute, finish), the worker pool that sends, adaptive
concurrency, the circuit breaker, resume state, progress and statistics."""
