"""Benchmarks of the simulator (numbers, not pass/fail timings); `python -m bench`."""

from toy import runtime

runtime.setup()          # as every entry point: one CPU device per core for the samplers, before JAX starts
