r"""The fused model: trained CNN, MobileNetV2 and VGG16 backbones, frozen, under one fusion head.

  python -m ecgjax.main --config=configs/fusion.py --workdir=runs/fusion \
      --config.fusion.workdirs.cnn=runs/cnn \
      --config.fusion.workdirs.mobilenet_v2=runs/mobilenet_v2 \
      --config.fusion.workdirs.vgg16=runs/vgg16

Each backbone is rebuilt from its workdir's config.json and restored from the checkpoint its run
reported (its `config.eval.checkpoint`; EMA parameters and recomputed BatchNorm statistics).
`--config.model.method` picks the fusion: 'concat_mlp' (penultimate features into an MLP),
'mean_probs' (averaged probabilities, nothing to train) or 'learned_logit_weights'.
`--config.model.freeze_backbones=False` fine-tunes them too. Train the three backbones with the
same data fields (image size, value range, grayscale, remove_grid, downscale) as this config.
`--config=configs/fusion.py:smoke` is the CPU smoke variant (its backbones' workdirs still have to be
given, e.g. from the smoke configs of cnn.py, mobilenet_v2.py and vgg16.py).

Other backbones: the argument lists them by config file, e.g. `configs/fusion.py:cnn_small,signals`
fuses the small page CNN (configs/cnn_small.py) with the 1-D model on the digitized leads
(configs/signals.py, which configs/default.py is), and `:cnn,mobilenet_v2,vgg16,signals` takes the
signal model as a fourth backbone; add `smoke` to the list for the smoke variant, and `joint` to
train the backbones together from scratch in one run instead of restoring trained ones (no
workdirs; their mean probability is the output, and each backbone also learns from its own
cross-entropy, `config.train.branch_loss_weight`). Joint training measured no better than the
signal model alone (0.873 both, `joint` ablation, docs/results/joint.md), below the two trained
apart and fused (0.890 on the same GPU). A config named n times gives n copies of that model, under
the keys `signals`, `signals_2`, ...: `configs/fusion.py:signals,signals,signals,joint` trains three
signal models together, each from its own initialisation on its own cross-entropy, with the signal
model's own recipe (epochs, rate, checkpoint), and reports their averaged probabilities: a deep
ensemble (the `signal_ensemble` ablation); without `joint`, it fuses trained runs, e.g. three seeds
(`--config.fusion.workdirs.signals_2=...`). With a signal backbone and an image one,
`config.data.input` is 'image+signals': each batch holds the page and its digitized leads (which
need `config.dataset.manual_dir`, as configs/signals.py does), and each backbone reads its own:

  python -m ecgjax.main --config=configs/fusion.py:cnn_small,signals --workdir=runs/fused \
      --config.dataset.manual_dir=$HOME/ecg_release --config.model.method=mean_probs \
      --config.fusion.workdirs.cnn_small=runs/cnn_small --config.fusion.workdirs.signals=runs/signals
"""

import ml_collections

from configs import cnn
from configs import cnn_small
from configs import default
from configs import mobilenet_v2
from configs import signals
from configs import vgg16

# The backbones a fused model may name, by the config file each one's architecture comes from.
# (No "default": it is configs/signals.py now, and `default,signals` meant the page CNN before.)
CONFIGS = {"cnn": cnn, "cnn_small": cnn_small, "mobilenet_v2": mobilenet_v2, "vgg16": vgg16,
           "signals": signals}
BACKBONES = ("cnn", "mobilenet_v2", "vgg16")  # With no argument: the seed's three.


OPTIONS = ("smoke", "joint")  # Words of the argument that are not backbones.


def _parse(arg: str | None) -> tuple[dict[str, str], set[str]]:
  """'cnn_small,signals,joint,smoke' -> ({'cnn_small': 'cnn_small', 'signals': 'signals'},
  {'joint', 'smoke'}): each backbone's key and the config file it comes from. A config named again
  gives another copy of that model: 'signals,signals,signals' -> keys 'signals', 'signals_2',
  'signals_3' (an ensemble: trained runs of other seeds, or trained together with `joint`)."""
  words = [w.strip() for w in (arg or "").split(",") if w.strip()]
  flags = {w for w in words if w in OPTIONS}
  names = [w for w in words if w not in OPTIONS] or list(BACKBONES)
  unknown = [k for k in names if k not in CONFIGS]
  if unknown or len(names) < 2:
    raise ValueError(f"Unknown config argument {arg!r}; use two or more backbones of "
                     f"{sorted(CONFIGS)} separated by commas (one named n times: n copies of it), "
                     f"and/or {' or '.join(OPTIONS)} (nothing: {','.join(BACKBONES)}).")
  keys = {}
  for name in names:
    copies = sum(base == name for base in keys.values())
    keys[f"{name}_{copies + 1}" if copies else name] = name
  return keys, flags


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  keys, flags = _parse(arg)
  smoke = "smoke" in flags
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
      {key: CONFIGS[name].get_config("smoke" if smoke else None).model
       for key, name in keys.items()})
  config.fusion = ml_collections.ConfigDict()
  # Trained runs to restore each backbone from ('' = train that backbone from scratch, which
  # needs freeze_backbones=False).
  config.fusion.workdirs = ml_collections.ConfigDict({key: "" for key in keys})
  reads = {"signals" if name == "signals" else "image" for name in keys.values()}
  config.data.input = "image+signals" if len(reads) == 2 else reads.pop()
  config.data.image_size = (256, 448)
  if "joint" in flags:  # Trained together from scratch, with BatchNorm statistics recomputed.
    config.model.method = "mean_probs"
    config.model.freeze_backbones = False
    config.model.bn_momentum = 0.9  # One field for all, so that their statistics are recomputed.
    if len(set(keys.values())) == 1:
      # Copies of one model (e.g. 'signals,signals,signals,joint'): a deep ensemble, each copy
      # from its own initialisation on its own cross-entropy, with that model's own recipe.
      own = CONFIGS[next(iter(keys.values()))].get_config(None)
      config.train = own.train
      config.eval.checkpoint = own.eval.checkpoint
      config.train.branch_loss_weight = 1.0
    else:  # Different models: base_config's epochs and rate, and a share of the fused loss.
      # 0.873 +- 0.051 against 0.871 (0) and 0.840 (1), 3 seeds x 5 folds (docs/results/joint.md).
      config.train.branch_loss_weight = 0.5
  else:  # A head over frozen, trained backbones.
    config.train.num_epochs = 10
    config.train.learning_rate = 1e-3
    config.train.bn_recompute_batches = 0  # Frozen backbones keep their own evaluation statistics.
  if smoke:
    config = default.smoke(config)
  if config.data.input == "image+signals":
    config.saliency.num_pages = 0  # Maps are drawn for page models or signal models, not both.
  elif config.data.input == "signals":  # Signal models only: maps on the digitized traces.
    config.saliency.method = signals.get_config().saliency.method
  return config
