"""Deploying to a fleet of hosts over SSH: the controller's side.

``setup`` puts this very nextdeploy on every host (``wheelhouse``, ``facts``), ``platformcheck`` compares the
build machine with the hosts, ``plan`` decides (rollout order, all-or-nothing, convergence; pure), ``ship``
sends a release to every host as a delta, ``prepare`` readies every host before any switches (the shared
Server Actions key).
"""
