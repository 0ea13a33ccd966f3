"""Benchmark runner: launches the paper's (env x script x seed) grids locally, on Ray, or on SLURM.

Entry point: ``python benchmark/run.py --suite <name>``; suites are JSON files in ``benchmark/suites/``.
"""
