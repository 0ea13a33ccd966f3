"""Measurement and check tools, with their results (see benchmark/measurements/README.md): speed of whole scripts and
of one critic update, checkpoint memory, the update path check, and the GPU check."""
