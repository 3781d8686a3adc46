"""The process: CLI, configuration, the composition root (daemon), operations endpoints, logging, systemd.

The only part of `collector` that imports `api`.
"""
