"""``--ray``: the driver that shards the input and the worker actors that run the shards.
Imported only by a ``--ray`` run."""
