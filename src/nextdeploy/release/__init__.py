"""Making a release: the build, its assembly, the project it comes from, the Server Actions key."""
