"""Host-level procedures as short step scripts: deploy, rollback, start, stop, status, the dry run."""
