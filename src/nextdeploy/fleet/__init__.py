"""Deploying to many hosts over SSH: the controller's side (set-up, platform check, rollout)."""
