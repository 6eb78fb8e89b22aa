"""Putting a release live: the preflight, the held cut-over, reloads, failure and recovery."""
