"""Draws docs/synth_vs_real.png: real pages of the release beside synthetic pages, per class.

    PYTHONPATH=. python experiments/figure_synth_vs_real.py \
        --sample_dir ../shared/data/ecg_images_sample --out docs/synth_vs_real.png

One row per class; the left column shows a real page (from the 16-page sample of the release), the
right column a synthetic page of the same class from `ecgjax.data.synth`.
"""

from __future__ import annotations

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from ecgjax.classes import CLASS_NAMES  # noqa: E402
from ecgjax.data import synth  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  beside_repo = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
  parser.add_argument("--sample_dir", default=str(beside_repo / "ecg_images_sample"))
  parser.add_argument("--out", default="docs/synth_vs_real.png")
  parser.add_argument("--seed", type=int, default=2)
  parser.add_argument("--width", type=int, default=700, help="Width of each page in the figure, px.")
  args = parser.parse_args()
  sample = pathlib.Path(args.sample_dir)
  fig, axes = plt.subplots(len(CLASS_NAMES), 2, figsize=(2 * args.width / 100, len(CLASS_NAMES)
                                                          * args.width * 1572 / 2213 / 100 + 0.8),
                           dpi=100)
  for row, name in enumerate(CLASS_NAMES):
    folder = sample / synth.RELEASE_FOLDERS[name]
    real_path = folder / f"{synth.RELEASE_PREFIXES[name]}(2).jpg"
    if not real_path.exists():
      raise FileNotFoundError(f"Real sample page {real_path} not found; pass --sample_dir.")
    real = Image.open(real_path).convert("RGB")
    seed = synth.page_seed(args.seed, name, 0)
    fake = Image.fromarray(synth.render(synth.simulate(name, seed), seed))
    size = (args.width, round(args.width * real.height / real.width))
    for col, (image, kind) in enumerate([(real, f"real: {real_path.name}"),
                                         (fake, f"synthetic: seed {seed}")]):
      ax = axes[row, col]
      ax.imshow(image.resize(size, Image.Resampling.LANCZOS))
      ax.set_title(f"{name} — {kind}", fontsize=9)
      ax.axis("off")
  fig.tight_layout()
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(args.out)
  print(f"Wrote {args.out}")


if __name__ == "__main__":
  main()
