r"""The small custom CNN on page images, sized for a 2-core CPU: the best page-image recipe measured.

  python -m ecgjax.main --config=configs/cnn_small.py --workdir=runs/cnn_small \
      --config.dataset.name=ecg_images --config.dataset.config=w640 \
      --config.dataset.manual_dir=$HOME/ecg_release

Filters 16-128, one convolution per stage, no augmentation, 40 epochs at 256x448 on the ECG input
(grid removed, grey, min-pooled): macro-F1 0.769 +- 0.071 on the 292 development pages (3 seeds x 5
folds, about 3.5 minutes a fold on 2 cores; docs/results/default_cpu.md), ahead of the larger
configs/cnn.py. It was configs/default.py until the signal model (configs/signals.py, 0.851) took
that place; its fields are `default.base_config()`'s, which every config starts from. Fused with the
signal model it is the best measured (configs/fusion.py:cnn_small,signals).

`--config=configs/cnn_small.py:smoke` shrinks it to a CPU smoke run of seconds.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.base_config()
  if arg == "smoke":
    config = default.smoke(config)
    config.model.filters = (4, 8)
    config.model.dense_units = 8
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return config
