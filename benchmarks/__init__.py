"""Benchmarks of EMOdiffhead inference: speed and quality (speed.py), memory (memory.py), GPU throughput
(gpu_throughput.py). Each script prints one JSON line and writes a PNG plot; see benchmarks/README.md."""
