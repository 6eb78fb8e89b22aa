"""The one place that touches a host: the executor of ops, files, processes and /proc, ports, locks, tools and
HTTP probes."""
