"""The shared vocabulary: config, paths, errors and exit codes, ids, the release log, manifests, step names and
progress output. Nothing here touches a host."""
