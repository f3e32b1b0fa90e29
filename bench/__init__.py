"""Benchmarks that print ratios against the parts' own ceilings (see bench/README.md); never collected by pytest."""
