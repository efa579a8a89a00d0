"""Bytes to and from servers: the transport seam (network or in-process), the JSON client,
the pool of servers and their ``/metrics``. The only place the network is touched."""
