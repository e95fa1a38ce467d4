"""The S²-Guidance toy simulator. Importing it splits the CPU into one device per core (two at most)
before JAX starts, so that sampler runs can use both cores (`toy.runtime.split_cpu_cores`)."""

from toy import runtime

runtime.split_cpu_cores()
