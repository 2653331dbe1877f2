"""Data sets (TFDS builders `ecg_images`, `ecg_synth`) and the grain input pipeline."""
