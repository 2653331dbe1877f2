r"""The fused model: trained CNN, MobileNetV2 and VGG16 backbones, frozen, under one fusion head.

  python -m ecgjax.main --config=configs/fusion.py --workdir=runs/fusion \
      --config.fusion.workdirs.cnn=runs/cnn \
      --config.fusion.workdirs.mobilenet_v2=runs/mobilenet_v2 \
      --config.fusion.workdirs.vgg16=runs/vgg16

Each backbone is rebuilt from its workdir's config.json and restored from its best checkpoint (EMA
parameters and recomputed BatchNorm statistics). `--config.model.method` picks the fusion:
'concat_mlp' (penultimate features into an MLP), 'mean_probs' (averaged probabilities, nothing to
train) or 'learned_logit_weights'. `--config.model.freeze_backbones=False` fine-tunes them too.
Train the three backbones with the same data fields (image size, value range, grayscale,
remove_grid, downscale) as this config.
`--config=configs/fusion.py:smoke` is the CPU smoke variant (its backbones' workdirs still have to be
given, e.g. from the smoke configs of cnn.py, mobilenet_v2.py and vgg16.py).
"""

import ml_collections

from configs import cnn
from configs import default
from configs import mobilenet_v2
from configs import vgg16

BACKBONES = {"cnn": cnn, "mobilenet_v2": mobilenet_v2, "vgg16": vgg16}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  config = default.base_config()
  config.model = ml_collections.ConfigDict()
  config.model.name = "fusion"
  config.model.method = "concat_mlp"  # 'concat_mlp', 'mean_probs' or 'learned_logit_weights'.
  config.model.freeze_backbones = True  # Inference-mode backbones, excluded from the optimizer.
  config.model.mlp_units = 256  # Hidden width of the 'concat_mlp' head.
  config.model.dropout = 0.3
  config.model.dtype = "float32"
  # The backbones' architectures; replaced by each workdir's own config when one is given.
  config.model.backbones = ml_collections.ConfigDict(
      {key: module.get_config(arg).model for key, module in BACKBONES.items()})
  config.fusion = ml_collections.ConfigDict()
  # Trained runs to restore each backbone from ('' = train that backbone from scratch, which
  # needs freeze_backbones=False).
  config.fusion.workdirs = ml_collections.ConfigDict({key: "" for key in BACKBONES})
  config.data.image_size = (256, 448)
  config.train.num_epochs = 10
  config.train.learning_rate = 1e-3
  config.train.bn_recompute_batches = 0  # Frozen backbones keep their own evaluation statistics.
  if arg == "smoke":
    config = default.smoke(config)
  return config
