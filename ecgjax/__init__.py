"""ecgjax: classify photographed or scanned 12-lead ECG printouts with JAX and Flax."""

__version__ = "0.1.0"
