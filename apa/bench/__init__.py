"""Benchmarks: training throughput, collation, the sampler's padding and task mix, generation."""
