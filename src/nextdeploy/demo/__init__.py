"""The example app and the bounded load generator of `nextdeploy demo` and the bench."""
