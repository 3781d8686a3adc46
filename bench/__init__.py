"""Benchmarks: each prints its figures; the README quotes them with the command that produced them."""
