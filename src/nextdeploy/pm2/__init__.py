"""The one place that talks to PM2: the client (CLI and daemon socket)."""
