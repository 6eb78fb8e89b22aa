"""The one place that talks to PM2: the client (CLI and process list), the daemon socket (rpc) and the
concurrent calls to it that the executor's worker ops make (sockets)."""
