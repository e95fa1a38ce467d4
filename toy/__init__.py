"""The S²-Guidance toy simulator. Importing it leaves JAX's configuration alone; a program calls
`toy.runtime.setup()` first to let sampler runs use every core (see toy.runtime)."""
