r"""VGG16 (the Keras Applications architecture) with a global-pooling head.

  python -m ecgjax.main --config=configs/vgg16.py --workdir=runs/vgg16

Keras' 4096-wide classifier head (`--config.model.head=classifier`) ties the model to one input size
and holds most of its 138M parameters; the pooling head suits page-shaped inputs. Heavy on a CPU: run
it on a GPU or TPU, or shrink it with `--config=configs/vgg16.py:smoke`.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.base_config()
  config.model = ml_collections.ConfigDict()
  config.model.name = "vgg16"
  config.model.head = "gap"  # 'gap' or Keras' 'classifier' (flatten, fc1, fc2).
  config.model.dense_units = 4096  # Width of fc1/fc2 in the 'classifier' head.
  config.model.dropout = 0.3
  config.model.width = 1.0  # Channel multiplier; 1.0 is Keras' VGG16.
  # torchvision's vgg16_bn with He initialisation: Keras' plain VGG16 does not learn from scratch
  # (`experiments/ablations.py`, vgg16_recipe). Keras weights need False and 'lecun'.
  config.model.batch_norm = True
  config.model.bn_momentum = 0.9
  config.model.kernel_init = "he"
  config.model.dtype = "float32"
  config.model.conv_impl = "auto"  # See configs/default.py.
  config.data.image_size = (256, 448)
  # No augmentation: with it the model does not fit its pages in 30 epochs (loss 0.09-0.22 at the
  # end, against 0.004-0.009), and without it macro-F1 gains +0.070, higher in 5 of 5 paired runs
  # (page_augmentation ablation, H200, seed 0 x 5 folds; docs/results/page_augmentation.md).
  config.data.augment = ""
  config.train.num_epochs = 30
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-3
  config.train.weight_decay = 1e-4
  if arg == "smoke":
    config = default.smoke(config)
    config.model.width = 1 / 16
    config.model.dense_units = 16
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return config
