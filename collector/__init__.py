"""Live call collector for Asterisk with a MOR-compatible active-calls API."""

__version__ = "0.1.0"
