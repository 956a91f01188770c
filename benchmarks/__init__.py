"""Benchmark harnesses for Puffin (see benchmarks/README.md)."""
