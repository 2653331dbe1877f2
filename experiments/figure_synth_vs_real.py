"""Draws docs/synth_vs_real.png: real pages of the release beside synthetic pages, per class.

    PYTHONPATH=. python experiments/figure_synth_vs_real.py \
        --sample_dir ../shared/data/ecg_images_sample --out docs/synth_vs_real.png

One row per class; the left column shows a real page (from the 16-page sample of the release), the
right column a synthetic page of the same class from `ecgjax.data.synth`.
"""

from __future__ import annotations

import pathlib

from absl import app
from absl import flags

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from ecgjax.classes import CLASS_NAMES  # noqa: E402
from ecgjax.data import synth  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  beside_repo = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
  flags.DEFINE_string("sample_dir", str(beside_repo / "ecg_images_sample"),
                      "The 16-page sample of the release.")
  flags.DEFINE_string("out", "docs/synth_vs_real.png", "The figure to write.")
  flags.DEFINE_integer("seed", 2, "Seed of the synthetic pages.")
  flags.DEFINE_integer("width", 700, "Width of each page in the figure, px.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  sample = pathlib.Path(FLAGS.sample_dir)
  fig, axes = plt.subplots(len(CLASS_NAMES), 2, figsize=(2 * FLAGS.width / 100, len(CLASS_NAMES)
                                                          * FLAGS.width * 1572 / 2213 / 100 + 0.8),
                           dpi=100)
  for row, name in enumerate(CLASS_NAMES):
    folder = sample / synth.RELEASE_FOLDERS[name]
    real_path = folder / f"{synth.RELEASE_PREFIXES[name]}(2).jpg"
    if not real_path.exists():
      raise FileNotFoundError(f"Real sample page {real_path} not found; pass --sample_dir.")
    real = Image.open(real_path).convert("RGB")
    seed = synth.page_seed(FLAGS.seed, name, 0)
    fake = Image.fromarray(synth.render(synth.simulate(name, seed), seed))
    size = (FLAGS.width, round(FLAGS.width * real.height / real.width))
    for col, (image, kind) in enumerate([(real, f"real: {real_path.name}"),
                                         (fake, f"synthetic: seed {seed}")]):
      ax = axes[row, col]
      ax.imshow(image.resize(size, Image.Resampling.LANCZOS))
      ax.set_title(f"{name} — {kind}", fontsize=9)
      ax.axis("off")
  fig.tight_layout()
  pathlib.Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(FLAGS.out)
  print(f"Wrote {FLAGS.out}")


def run() -> None:
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
