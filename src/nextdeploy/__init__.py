"""nextdeploy: zero-downtime deploys of self-hosted Next.js standalone apps under PM2."""

__version__ = "0.1.0"
