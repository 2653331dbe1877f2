r"""Default experiment: the best recipe for a 2-core CPU, the 1-D signal model on each page's
digitized leads (configs/signals.py), on the synthetic `ecg_synth/small` pages unless told otherwise.

  python -m ecgjax.main --config=configs/default.py --workdir=runs/default

On real pages (the digitizer reads the original files under manual_dir once, cached beside the
data set; about 1 minute a fold on 2 cores):

  python -m ecgjax.main --config=configs/default.py --workdir=runs/default_real \
      --config.dataset.name=ecg_images --config.dataset.config=w640 \
      --config.dataset.manual_dir=$HOME/ecg_release

Why this one (292 development pages, 3 seeds x 5 folds, macro-F1; README "Results on real pages"):
the signal model 0.887 +- 0.042 on 2 CPU cores, 0.874 +- 0.047 over 5 seeds (reporting its
last checkpoint; 0.851 +- 0.040 with the best on the validation fold, as every figure after this
one), against 0.769 +- 0.071 for the
best page-image model (configs/cnn_small.py, 3.5 times slower) and 0.873 for the two trained
together in one run (configs/fusion.py:cnn_small,signals,joint, 4.5 times slower; measured on an
H200, where the signal model gave 0.873 too). The two trained apart and fused are no better than
the signal model alone now (0.893 +- 0.037, paired +0.005), and take three commands (README
"Reading the signals").

Shrink for a CPU smoke run with `--config=configs/default.py:smoke`. Every other experiment config
starts from `base_config()` here (the fields every run has, with the small page CNN of
configs/cnn_small.py as its model) and changes what it needs; any field can be overridden on the
command line, e.g. `--config.train.num_epochs=80`.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Fields shared by every experiment, with the custom CNN on ecg_synth/small."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Parameters, dropout, shuffling and augmentation all derive from it.
  # Initialise parameters from another run's workdir (e.g. pre-trained on ecg_synth/large); '' = none.
  config.init_from = ""
  # jax's persistent compilation cache: steps compiled by an earlier run (another fold, seed or
  # resume) load from here instead of compiling again; '' turns it off. The first directory a
  # process sets is the one it keeps.
  config.compilation_cache_dir = "~/.cache/ecgjax/jax"

  config.dataset = ml_collections.ConfigDict()
  # TFDS builder: 'ecg_synth' (generated), 'ecg_images' (real) or 'ecg_signals_sim' (simulated
  # recordings, no pages: config.data.input='signals' only).
  config.dataset.name = "ecg_synth"
  config.dataset.config = "small"  # BuilderConfig of that builder.
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None: TFDS default.
  config.dataset.manual_dir = ml_collections.config_dict.placeholder(str)  # ecg_images: where the release is.

  config.data = ml_collections.ConfigDict()
  config.data.test_fold = ml_collections.FieldReference(0, field_type=object)  # Test fold 0..4; None: none.
  # Fold for model selection (the best checkpoint); None: no validation, the latest is reported.
  config.data.val_fold = ml_collections.FieldReference(1, field_type=object)  # object: None parses.
  config.data.image_size = (256, 448)  # (height, width) of the model input; the panel is ~1.72:1.
  config.data.resize_mode = "pad"  # 'pad': keep aspect ratio, pad with paper; 'stretch'.
  # The input of a printed ECG (docs/results/preprocessing.md: macro-F1 0.69 against 0.55 for RGB
  # resized bilinearly): the grid removed by luminance before resizing, leaving the near-black
  # trace on white; 'min_pool' shrinking (each pixel the darkest of its block: a 1-2 px trace stays
  # dark; 'bilinear' averages it into grey); one grey channel instead of RGB.
  config.data.remove_grid = True
  config.data.downscale = "min_pool"
  config.data.grayscale = True
  # 'panel': the grid panel whole; 'leads': cut along the known layout into the twelve leads and the
  # rhythm strip's four quarters, each `image_size` (e.g. (80, 160)), stacked as channels.
  config.data.crop = "panel"
  config.data.value_range = (-1.0, 1.0)  # uint8 [0, 255] is mapped to this inside the step.
  # What the model reads: 'image' (the panel, as above) or 'signals' (the page digitized into its
  # twelve 2.5 s leads and rhythm strip, in mV; ecgjax/data/digitized.py; configs/signals.py).
  config.data.input = "image"
  config.data.signal_hz = 125  # Sampling rate of the signals (a divisor of 500 Hz).
  # Training augmentation, ops of ecgjax/data/augment.py run on the device in the train step, e.g.
  # "rotate(2)|scale(0.05)|translate(0.02)|brightness(0.15)|contrast(0.15)"; '' turns it off.
  config.data.augment = ""
  # Pages are decoded and resized once, cached on disk beside the data set; 'memory' holds them in
  # RAM, 'mmap' memory-maps the cache (for sets larger than memory).
  config.data.cache = "memory"
  # 'shuffle': each training page once an epoch; 'balanced': an epoch's pages drawn with
  # replacement, each class equally often (with train.class_weights='none', as the imbalance
  # ablations' `sampled` arms; both together weight `mi` twice).
  config.data.sampling = "shuffle"
  config.data.worker_count = 0  # grain worker processes gathering batches (0: in the main process).
  config.data.read_threads = 4  # Threads gathering batches per process (an H100 is busier with 4 than 2).
  config.data.prefetch = 4  # Batches each thread gathers ahead.

  config.model = ml_collections.ConfigDict()
  # 'cnn', 'mobilenet_v2', 'vgg16', 'fusion' (page images) or 'resnet1d' (signals); the other fields
  # are its arguments.
  config.model.name = "cnn"
  config.model.filters = (16, 32, 64, 128)
  config.model.convs_per_stage = 1
  config.model.dense_units = 64
  config.model.dropout = 0.3
  config.model.bn_momentum = 0.9
  config.model.dtype = "float32"  # 'bfloat16' for activations on GPU/TPU; parameters stay float32.
  # Convolution implementation: 'auto' (oneDNN on one CPU device, XLA elsewhere), 'xla', 'onednn' or
  # 'shifted' (depthwise layers as shifted slices); `ecgjax.kernels.conv.resolve_impl` decides.
  config.model.conv_impl = "auto"

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16  # Global batch; must divide by the number of devices.
  config.train.num_epochs = 40
  config.train.optimizer = "adamw"  # 'adamw', 'sgd' (Nesterov momentum 0.9) or 'lamb'.
  config.train.learning_rate = 3e-3  # Peak, reached after warm-up, then cosine decay to 0.
  config.train.warmup_epochs = 1.0
  config.train.weight_decay = 1e-4  # Decoupled; not applied to biases and norm scales.
  config.train.grad_clip_norm = 1.0  # Global-norm clipping; 0 turns it off.
  config.train.label_smoothing = 0.0
  config.train.class_weights = "balanced"  # 'balanced' (inverse train frequency) or 'none'.
  config.train.focal_gamma = 0.0  # Focal loss: each example's loss times (1 - p_true)^gamma; 0: off.
  # A fused model trained with its backbones: this share of the loss is each backbone's own
  # cross-entropy (their mean), the rest the fused output's; 1 trains them independently.
  config.train.branch_loss_weight = 0.0
  # Exponential moving average of the parameters, used for evaluation; 0 turns it off. It warms up
  # as TF's ExponentialMovingAverage(num_updates) does: the decay at step t is
  # min(ema_decay, (1 + t) / (10 + t)), which reaches 0.99 only at step 890 (0.999 at 8,990). A run
  # of fewer steps averages over about its last tenth whatever ema_decay says (the signal recipe's
  # 600 steps end at 0.985).
  config.train.ema_decay = 0.99
  # Stochastic weight averaging (Izmailov et al., 2018): over the last this many epochs the
  # evaluated parameters are the plain average of the trained ones after every step, in place of
  # the EMA (BatchNorm statistics recomputed for them as below); 0 turns it off. For the signal
  # model it gained nothing (paired -0.001 to -0.015 over 3 seeds x 5 folds: the
  # signal_weight_averaging ablation).
  config.train.swa_epochs = 0.0
  # With swa_epochs: the learning rate the cosine reaches where the averaging starts and holds
  # until the end (SWA's constant rate); None: the cosine decays to 0 at the end as without it.
  config.train.swa_learning_rate = ml_collections.config_dict.placeholder(float)
  # Before each evaluation, BatchNorm statistics are recomputed for the evaluated parameters as exact
  # averages over this many training batches (no augmentation); 0 keeps the moving averages.
  config.train.bn_recompute_batches = 4
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 50  # Also one at the end of every epoch.
  config.train.keep_checkpoints = 2  # Latest ones kept, besides the best by validation macro-F1.
  config.train.eval_every_epochs = 1
  # Stop as if killed once this step (and any checkpoint due at it) is done; for preemption tests.
  config.train.stop_at_step = ml_collections.config_dict.placeholder(int)

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 16
  config.eval.checkpoint = "best"  # Which checkpoint the test report uses: 'best' or 'latest'.

  config.saliency = ml_collections.ConfigDict()
  config.saliency.num_pages = 4  # Test pages the main job writes maps for (0: none).
  # 'gradient', 'smoothgrad', 'integrated_gradients' or 'grad_cam' (last feature maps). Grad-CAM
  # localises the MI territory best, passes the randomisation test and costs one backward pass
  # (docs/results/explain/explain_eval.md; `experiments/explain_eval.py`).
  config.saliency.method = "grad_cam"
  config.saliency.num_samples = 50  # SmoothGrad's noisy copies per page.
  config.saliency.steps = 64  # Integrated Gradients' path intervals.
  # Each lead's contribution (logits) to the predicted class over the runner-up, by Integrated
  # Gradients with this many steps, in the JSON and the lead chart; 0 turns it off.
  config.saliency.contrast_steps = 32
  config.saliency.chunk_size = 16  # Forward-backward passes per jitted call: bounds the memory.
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a run of seconds on a CPU; used by the tests."""
  config.dataset.config = "tiny"
  config.data.image_size = (48, 80)
  config.data.read_threads = 1
  config.train.batch_size = 4
  config.train.num_epochs = 2
  config.train.checkpoint_every_steps = 2
  config.train.log_every_steps = 1
  config.train.bn_recompute_batches = 2
  config.eval.batch_size = 4
  config.saliency.num_pages = 2
  config.saliency.num_samples = 8
  config.saliency.steps = 8
  config.saliency.contrast_steps = 4
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default recipe: the signal model (configs/signals.py; its arguments, 'smoke' and
  'pretrain', pass through)."""
  from configs import signals  # pylint: disable=g-import-not-at-top  (signals imports this file)
  return signals.get_config(arg)
