"""Benchmarks: `make bench` runs them all. Figures are printed, never asserted in tests."""
