"""Deploying to a fleet of hosts over SSH (issue 23): the controller's side.

``plan`` decides (rollout order, all-or-nothing, convergence; pure), ``ship`` sends a release to every
host as a delta, ``prepare`` readies every host before any switches (the shared Server Actions key).
"""
