"""Where the 16-page real sample lives: ../shared/data/ecg_images_sample beside the repository
(as on developer machines and CI), or $ECGJAX_SAMPLE_DIR. Tests that need it fail, never skip,
when it is missing."""

import os
import pathlib

SAMPLE_DIR = pathlib.Path(os.environ.get(
    "ECGJAX_SAMPLE_DIR",
    pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ecg_images_sample"))

if not SAMPLE_DIR.is_dir():
  raise FileNotFoundError(
      f"The real ECG sample is not at {SAMPLE_DIR}: put the shared/ folder beside the repository "
      "or set ECGJAX_SAMPLE_DIR.")
