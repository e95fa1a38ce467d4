"""The image experiment: a class-conditional DiT with droppable blocks on CIFAR-10 horse/car (or the
embedded 8×8 digits), every guidance method of the core on it, and t-SNE of generated features
(paper Fig. 4, Fig. 15).

It imports the core (`toy.train`, `toy.diffusion`, `toy.guidance`, `toy.layers`); the core never
imports it. Modules: `data` (archives read safely, the embedded digits), `dit` (the network),
`features` (feature nets and image metrics), `pipeline` (train, sample, evaluate, figures), `cli`
(`python -m toy images …`).
"""
