"""Hosting and supervision: stage hosts, launcher, supervisor, watchdog, config, fused mode, CLI."""
