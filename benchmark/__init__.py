"""Benchmark: the suite runner, measurement tools and reproduction data (see benchmark/README.md).

- the runner: ``python benchmark/run.py --suite <name>`` launches the paper's (env x script x cell x seed) runs
  locally, on Ray, or on SLURM (run.py, suite_loader.py, commands.py, backends.py, slurm.py); suites are JSON files
  in ``benchmark/suites/``;
- ``benchmark/measurements/``: speed, memory and device tools and their results;
- ``benchmark/reproduction/``: our full-length runs of the paper's cells, with their pages;
- ``benchmark/docs/``: the long versions of the README's sections.
"""
