"""Compute kernels chosen per backend: `conv` runs 2D convolutions in oneDNN on CPU, XLA elsewhere."""
