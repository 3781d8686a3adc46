"""Trace tools for tests, demos and bug reports: read, record, replay as a live AMI server, timeline."""
