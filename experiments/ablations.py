"""The ready-made ablations: which arms each compares, as config files plus overrides.

Run one with `python experiments/sweep.py --ablation=NAME ...` (see sweep.py). An arm may need
another arm's trained run of the same seed and fold (the fused model needs its three backbones,
fine-tuning needs the pre-trained run): `needs` maps a config field to that arm, and the sweep
runs it first and passes its workdir.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Arm:
  name: str
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  config: str | None = None  # Config file; None: the ablation's.
  needs: dict[str, str] = dataclasses.field(default_factory=dict)  # field -> arm name
  per_fold: bool = True  # False: one run per seed whatever the test fold (e.g. pre-training).
  smoke_overrides: dict[str, Any] | None = None  # Replaces `overrides` in --smoke runs.

  def __hash__(self):
    return hash(self.name)


@dataclasses.dataclass(frozen=True)
class Ablation:
  name: str
  description: str
  arms: Sequence[Arm]
  config: str = "configs/cnn.py"
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  smoke_overrides: dict[str, Any] | None = None  # Replaces `overrides` in --smoke runs.
  hidden: tuple[str, ...] = ()  # Arms run only because others need them: left out of the table.


BACKBONES = (
    Arm("cnn", config="configs/cnn.py"),
    Arm("mobilenet_v2", config="configs/mobilenet_v2.py"),
    Arm("vgg16", config="configs/vgg16.py"),
)
_FUSION_NEEDS = {f"fusion.workdirs.{a.name}": a.name for a in BACKBONES}
# The input for printed ECGs (the configs' default): the grid removed, the trace min-pooled so it
# stays 1-2 px and black, one grey channel (see the `preprocessing` ablation).
ECG_INPUT = {"data.remove_grid": True, "data.downscale": "min_pool", "data.grayscale": True}
_PLAIN_INPUT = {"data.remove_grid": False, "data.downscale": "bilinear", "data.grayscale": True}
# One input for all models of a comparison, so the backbones can be fused.
_SHARED_INPUT = {"data.image_size": (256, 448), **ECG_INPUT}
_SMOKE_INPUT = dict(ECG_INPUT)

AUGMENT = "rotate(2)|scale(0.05)|translate(0.02)|brightness(0.15)|contrast(0.15)"
# Augmentation that never resamples the page: whole-pixel shifts and photometric ops keep a 1-2 px
# trace black (the page_augmentation ablation's 'sharp' arms).
SHARP_AUGMENT = "shift(8)|brightness(0.15)|contrast(0.15)"
_PAGE_AUGMENT = {"augment": AUGMENT, "none": "", "sharp": SHARP_AUGMENT}
# The digitized leads' variation between pages: the print's gain, the time origin (up to 0.1 s),
# the digitizer's error around the trace, and an unread lead.
SIGNAL_AUGMENT = "amplitude(0.2)|time_shift(0.01)|signal_noise(0.03)|drop_leads(0.1)"

# No validation fold: a run trains on the four folds besides its test fold and reports its last
# checkpoint (the sweep leaves data.val_fold None when an override says so).
_FOUR_FOLDS = {"data.val_fold": None, "eval.checkpoint": "latest"}
# The page CNN and the signal model fused by averaging their probabilities: nothing to train.
_FUSED_IMAGE_SIGNALS = "configs/fusion.py:cnn_small,signals"
_FUSED_MEAN_PROBS = {"model.method": "mean_probs", "train.num_epochs": 1}
# Class-balanced sampling in place of class weights: each class drawn equally often.
_SAMPLED = {"data.sampling": "balanced", "train.class_weights": "none"}
# Pre-training on simulated records: their fold 0 is its test (a record of how well it learned the
# simulator), the other four train it.
_SIM = {"dataset.name": "ecg_signals_sim", "data.test_fold": 0, "data.val_fold": None}

ABLATIONS: dict[str, Ablation] = {
    a.name: a for a in (
        Ablation(
            "models",
            "The seed's comparison: custom CNN, MobileNetV2, VGG16 and the fused model (frozen "
            "backbones, concatenated features into an MLP), on one input size.",
            arms=(*BACKBONES,
                  Arm("fusion", config="configs/fusion.py", needs=_FUSION_NEEDS)),
            overrides=_SHARED_INPUT, smoke_overrides=_SMOKE_INPUT),
        Ablation(
            "models_four_folds",
            "The seed's comparison as the page CNN gained from it on the CPU (model_selection): "
            "each backbone trained on four folds (no validation fold) and reporting its last "
            "checkpoint, and the three fused by averaging their probabilities.",
            arms=(*BACKBONES,
                  Arm("fused_mean_probs", _FUSED_MEAN_PROBS, config="configs/fusion.py",
                      needs=_FUSION_NEEDS)),
            overrides={**_SHARED_INPUT, **_FOUR_FOLDS},
            smoke_overrides={**_SMOKE_INPUT, **_FOUR_FOLDS}),
        Ablation(
            "mobilenet_v2_schedule",
            "MobileNetV2's schedule on models_four_folds' input and folds: the seed's 30 epochs, "
            "where it does not fit its training pages, against 90 (configs/mobilenet_v2.py).",
            arms=(Arm("epochs_30", {"train.num_epochs": 30},
                      smoke_overrides={"train.num_epochs": 1}),
                  Arm("epochs_90")),
            config="configs/mobilenet_v2.py", overrides={**_SHARED_INPUT, **_FOUR_FOLDS},
            smoke_overrides={**_SMOKE_INPUT, **_FOUR_FOLDS}),
        Ablation(
            "page_augmentation",
            "The page models' training augmentation (rotation by up to 2 degrees, scale 5%, "
            "translation 2%, brightness and contrast 15%) against none, on models_four_folds' "
            "input and folds. Rotating or rescaling resamples the page, which greys the 1-2 px "
            "trace that the ECG input's min-pooling keeps black; 'sharp' varies the page without "
            "resampling it (whole-pixel shifts up to 8 px, brightness, contrast), to tell that "
            "cost from augmentation's own. The sets with and without augmentation are each fused "
            "by averaging their probabilities.",
            arms=(*(Arm(f"{a.name}_{aug}", {"data.augment": spec}, config=a.config)
                    for a in (*BACKBONES, Arm("cnn_small", config="configs/cnn_small.py"))
                    for aug, spec in _PAGE_AUGMENT.items()),
                  *(Arm(f"fused_{aug}", _FUSED_MEAN_PROBS, config="configs/fusion.py",
                        needs={field: f"{arm}_{aug}" for field, arm in _FUSION_NEEDS.items()})
                    for aug in ("augment", "none"))),
            overrides={**_SHARED_INPUT, **_FOUR_FOLDS},
            smoke_overrides={**_SMOKE_INPUT, **_FOUR_FOLDS}),
        Ablation(
            "mobilenet_v2_width",
            "MobileNetV2's width on models_four_folds' input and folds, with its augmentation "
            "and without: Keras' alpha 1.0 (2.2 M parameters, configs/mobilenet_v2.py) against "
            "0.35 (0.4 M), the narrowest Keras ships. On 234 training pages the page models that "
            "generalise best are the small ones (the CPU small CNN above the CNN); without "
            "augmentation alpha 1.0 drives its training loss to 0 and loses 0.05.",
            arms=tuple(Arm(f"alpha_{alpha}_{aug}", {"model.alpha": alpha,
                                                     "data.augment": _PAGE_AUGMENT[aug]},
                           smoke_overrides={"data.augment": _PAGE_AUGMENT[aug]})
                       for alpha in (1.0, 0.35) for aug in ("augment", "none")),
            config="configs/mobilenet_v2.py", overrides={**_SHARED_INPUT, **_FOUR_FOLDS},
            smoke_overrides={**_SMOKE_INPUT, **_FOUR_FOLDS}),
        Ablation(
            "fusion_method",
            "How to fuse the three trained backbones: an MLP on concatenated penultimate "
            "features, averaged probabilities, or learned weights over logits.",
            arms=(*BACKBONES,
                  *(Arm(f"fusion_{m}", config="configs/fusion.py", needs=_FUSION_NEEDS,
                        overrides={"model.method": m})
                    for m in ("concat_mlp", "mean_probs", "learned_logit_weights"))),
            overrides=_SHARED_INPUT, smoke_overrides=_SMOKE_INPUT,
            hidden=tuple(a.name for a in BACKBONES)),
        Ablation(
            "preprocessing",
            "The input of a printed ECG: RGB resized bilinearly (as shipped before), one grey "
            "channel, the trace min-pooled instead of averaged away, the grid removed by colour "
            "first, and that at the w640 panel's full width.",
            arms=(Arm("rgb_bilinear", {**_PLAIN_INPUT, "data.grayscale": False}),
                  Arm("gray_bilinear", _PLAIN_INPUT),
                  Arm("gray_min_pool", {**_PLAIN_INPUT, "data.downscale": "min_pool"}),
                  Arm("nogrid_gray_min_pool", ECG_INPUT),
                  Arm("nogrid_gray_min_pool_368x640", {**ECG_INPUT, "data.image_size": (368, 640)},
                      smoke_overrides={**ECG_INPUT, "data.image_size": (64, 112)})),
            overrides={"data.image_size": (256, 448)}, smoke_overrides={}),
        Ablation(
            "imbalance",
            "The class imbalance (mi is 6% of the pages): plain cross-entropy, class weights "
            "inverse to the training frequency (the default), a focal loss (gamma 2) with "
            "those weights, and class-balanced sampling without them.",
            arms=(Arm("none", {"train.class_weights": "none"}),
                  Arm("balanced", {"train.class_weights": "balanced"}),
                  Arm("balanced_focal2", {"train.class_weights": "balanced",
                                          "train.focal_gamma": 2.0}),
                  Arm("sampled", _SAMPLED)),
            overrides=_SHARED_INPUT, smoke_overrides=_SMOKE_INPUT),
        Ablation(
            "vgg16_recipe",
            "What makes VGG16 learn from scratch: Keras' plain VGG16 as flax initialises it with "
            "SGD (the old recipe), He initialisation, and torchvision's vgg16_bn (BatchNorm, He "
            "initialisation) with AdamW (configs/vgg16.py).",
            arms=(Arm("plain_lecun_sgd", {"model.batch_norm": False, "model.kernel_init": "lecun",
                                          "train.optimizer": "sgd", "train.learning_rate": 1e-2,
                                          "train.weight_decay": 5e-4,
                                          "train.bn_recompute_batches": 0}),
                  Arm("plain_he_sgd", {"model.batch_norm": False, "model.kernel_init": "he",
                                       "train.optimizer": "sgd", "train.learning_rate": 1e-2,
                                       "train.weight_decay": 5e-4,
                                       "train.bn_recompute_batches": 0}),
                  Arm("bn_he_adamw", {})),
            config="configs/vgg16.py", overrides=_SHARED_INPUT, smoke_overrides=_SMOKE_INPUT),
        Ablation(
            "resolution",
            "Input resolution: the seed's 224x224 (page stretched), and the page's own aspect "
            "ratio at 224 and 384 px high. At 224 px the 2 px trace of a ~2100 px panel fades to "
            "grey.",
            arms=(Arm("224x224_stretch", {"data.image_size": (224, 224),
                                          "data.resize_mode": "stretch"},
                      smoke_overrides={"data.image_size": (48, 48),
                                       "data.resize_mode": "stretch"}),
                  Arm("224x384", {"data.image_size": (224, 384)},
                      smoke_overrides={"data.image_size": (48, 80)}),
                  Arm("384x656", {"data.image_size": (384, 656)},
                      smoke_overrides={"data.image_size": (64, 112)}))),
        Ablation(
            "augmentation",
            "Training augmentation that respects an ECG (small rotation, scale, translation, "
            "brightness, contrast; never a flip) against none, and with blur and sensor noise.",
            arms=(Arm("none", {"data.augment": ""}),
                  Arm("augment", {"data.augment": AUGMENT}),
                  Arm("augment_blur_noise", {"data.augment": AUGMENT + "|blur(1.0)|noise(4)"}))),
        Ablation(
            "signals",
            "A page read as pixels or as signals: the CPU page-image recipe "
            "(configs/cnn_small.py), the 1-D model on the digitized leads (configs/signals.py, the "
            "default), and the two fused by averaging their probabilities "
            "(configs/fusion.py:cnn_small,signals; "
            "nothing to train, so one epoch).",
            arms=(Arm("image", config="configs/cnn_small.py"),
                  Arm("signals", config="configs/signals.py"),
                  Arm("fused", config="configs/fusion.py:cnn_small,signals",
                      needs={"fusion.workdirs.cnn_small": "image",
                             "fusion.workdirs.signals": "signals"},
                      overrides={"model.method": "mean_probs", "train.num_epochs": 1})),
            config="configs/cnn_small.py"),
        Ablation(
            "lead_crops",
            "The page CNN (configs/cnn_small.py) on the whole grid panel at 256x448 against the "
            "panel cut along the known layout into its twelve leads and the rhythm strip's four "
            "quarters, each 80x144 (a 640 px panel's lead at about its own resolution), stacked "
            "as channels so that the model knows which lead a wave is in.",
            arms=(Arm("panel", {"data.crop": "panel"}),
                  Arm("leads", {"data.crop": "leads", "data.image_size": (80, 144)},
                      smoke_overrides={"data.crop": "leads", "data.image_size": (16, 24)})),
            config="configs/cnn_small.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "joint",
            "The page image model (configs/cnn_small.py) and the signal model trained together in "
            "one run from scratch (configs/fusion.py:cnn_small,signals,joint; their averaged "
            "probabilities are the output), by the share of the loss that is each model's own "
            "cross-entropy rather than the fused output's: 0 (the fused output alone), 0.5, and 1 "
            "(each model trained independently, as two runs would).",
            arms=(Arm("fused_loss", {"train.branch_loss_weight": 0.0}),
                  Arm("half", {"train.branch_loss_weight": 0.5}),
                  Arm("branch_loss", {"train.branch_loss_weight": 1.0})),
            config="configs/fusion.py:cnn_small,signals,joint"),
        Ablation(
            "signal_view",
            "The signal model (configs/signals.py, the default) on the leads where the page shows "
            "them (three at a time) against the twelve leads' 2.5 s windows stacked side by side "
            "with the rhythm strip's quarters, so that every convolution sees all twelve, against "
            "each lead's average beat (aligned on the rhythm strip's QRS complexes; "
            "ecgjax/models/beats.py), alone and beside the page view.",
            arms=(Arm("page", {"model.view": "page"}),
                  Arm("stacked", {"model.view": "stacked"}),
                  Arm("beats", {"model.view": "beats"}),
                  Arm("page+beats", {"model.view": "page+beats"})),
            config="configs/signals.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "model_selection",
            "Which checkpoint a run reports: the best on a validation fold (until 2026-11-26 "
            "every config's), the latest of the same training (configs/signals.py's now), or the "
            "latest of a run that trains on that fold too (four folds instead of three; no "
            "validation). For the signal model (configs/signals.py), the page CNN "
            "(configs/cnn_small.py) and the two fused by averaging their probabilities.",
            # A fold number: the sweep validates on the fold after the test fold; None: none.
            arms=(Arm("val_best", {"data.val_fold": 1, "eval.checkpoint": "best"}),
                  Arm("val_latest", {"data.val_fold": 1, "eval.checkpoint": "latest"}),
                  Arm("no_val", {"data.val_fold": None}),
                  Arm("image_val_best", {"data.val_fold": 1, "eval.checkpoint": "best"},
                      config="configs/cnn_small.py"),
                  Arm("image_val_latest", {"data.val_fold": 1, "eval.checkpoint": "latest"},
                      config="configs/cnn_small.py"),
                  Arm("image_no_val", {"data.val_fold": None}, config="configs/cnn_small.py"),
                  Arm("fused_val_best", _FUSED_MEAN_PROBS, config=_FUSED_IMAGE_SIGNALS,
                      needs={"fusion.workdirs.cnn_small": "image_val_best",
                             "fusion.workdirs.signals": "val_best"}),
                  Arm("fused_val_latest", _FUSED_MEAN_PROBS, config=_FUSED_IMAGE_SIGNALS,
                      needs={"fusion.workdirs.cnn_small": "image_val_best",
                             "fusion.workdirs.signals": "val_latest"}),
                  Arm("fused_no_val", {**_FUSED_MEAN_PROBS, "data.val_fold": None},
                      config=_FUSED_IMAGE_SIGNALS,
                      needs={"fusion.workdirs.cnn_small": "image_no_val",
                             "fusion.workdirs.signals": "no_val"})),
            config="configs/signals.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "signal_augmentation",
            "Augmenting the signal model's digitized leads (the page's gain, the time origin, "
            "noise around the trace, an unread lead) against none.",
            arms=(Arm("none", {"data.augment": ""}),
                  Arm("augment", {"data.augment": SIGNAL_AUGMENT})),
            config="configs/signals.py"),
        Ablation(
            "signal_rhythm",
            "The signal model (configs/signals.py, the default) with and without the rhythm "
            "strip's RR intervals measured (the rate, their variation beat to beat: "
            "ecgjax/models/beats.py rhythm_features) beside its convolutions, which see one or "
            "two beats at a time.",
            arms=(Arm("page", {"model.view": "page"}),
                  Arm("page+rhythm", {"model.view": "page+rhythm"})),
            config="configs/signals.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "signal_ensemble",
            "The signal model (configs/signals.py, the default) against three copies of it "
            "trained together in one run, each from its own initialisation on its own "
            "cross-entropy, their probabilities averaged (a deep ensemble, three times the "
            "compute: configs/fusion.py:signals,signals,signals,joint).",
            arms=(Arm("single"),
                  Arm("ensemble3", config="configs/fusion.py:signals,signals,signals,joint")),
            config="configs/signals.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "signal_pooling",
            "How the signal model (configs/signals.py, the default) pools its last feature map "
            "over time: the mean (a wave counts by how long it lasts), the max (a wave seen once, "
            "one extrasystole of the strip or one lead's ST segment, counts fully), and both "
            "concatenated.",
            arms=(Arm("mean", {"model.pooling": "mean"}),
                  Arm("max", {"model.pooling": "max"}),
                  Arm("mean+max", {"model.pooling": "mean+max"})),
            config="configs/signals.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "signal_capacity",
            "The signal model's size (configs/signals.py, the default: 0.49 M parameters) against "
            "half its widths (0.12 M) and two residual blocks a stage (1.02 M), on the same 175 "
            "training pages: on this data the small page CNN generalised better than the larger "
            "one.",
            arms=(Arm("base"),
                  Arm("narrow", {"model.stem_width": 16, "model.widths": (16, 32, 64, 64)}),
                  Arm("deep", {"model.blocks_per_stage": 2})),
            config="configs/signals.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "signal_weight_averaging",
            "The signal model (configs/signals.py, the default) evaluated with the plain average "
            "of its weights over its last epochs (stochastic weight averaging, train.swa_epochs) "
            "instead of their EMA, which in its 600 steps spans about its last 6 epochs: over the "
            "last quarter (15 epochs) and half (30) of the cosine, and over the last quarter at "
            "the constant rate of 1e-3 the cosine ends on there (SWA's schedule). Five seeds "
            "averaged give 0.903 against 0.874; averaging one run's weights costs nothing.",
            arms=(Arm("base"),
                  Arm("swa_quarter", {"train.swa_epochs": 15.0},
                      smoke_overrides={"train.swa_epochs": 0.5}),
                  Arm("swa_half", {"train.swa_epochs": 30.0},
                      smoke_overrides={"train.swa_epochs": 0.5}),
                  Arm("swa_constant", {"train.swa_epochs": 15.0, "train.swa_learning_rate": 1e-3},
                      smoke_overrides={"train.swa_epochs": 0.5,
                                       "train.swa_learning_rate": 1e-3})),
            config="configs/signals.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "signal_weight_decay",
            "The signal model's (configs/signals.py, the default) decoupled weight decay: 1e-4 "
            "(the default, optax's), 1e-2 (PyTorch's AdamW default) and 1e-1. Its runs fit their "
            "175 training pages to a loss of 0.001, and AdamW decays each kernel by the learning "
            "rate times this factor a step: 1e-4 shrinks nothing in 600 steps.",
            arms=(Arm("base"),
                  Arm("wd_0.01", {"train.weight_decay": 1e-2}),
                  Arm("wd_0.1", {"train.weight_decay": 1e-1})),
            config="configs/signals.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "signal_imbalance",
            "The class imbalance (mi is 6% of the pages) for the signal model (configs/signals.py, "
            "the default), as the imbalance ablation for the page CNN: plain cross-entropy, class "
            "weights inverse to the training frequency (the default), a focal loss (gamma 2) "
            "with those weights, and class-balanced sampling without them (each epoch's pages "
            "drawn with replacement, each class equally often).",
            arms=(Arm("balanced", {"train.class_weights": "balanced"}),
                  Arm("none", {"train.class_weights": "none"}),
                  Arm("balanced_focal2", {"train.class_weights": "balanced",
                                          "train.focal_gamma": 2.0}),
                  Arm("sampled", _SAMPLED)),
            config="configs/signals.py", overrides={"saliency.num_pages": 0}),
        Ablation(
            "signal_pretraining",
            "The signal model (configs/signals.py, the default) from scratch against pre-trained "
            "on simulated recordings (configs/signals.py:pretrain, one run per seed on 3,200 of "
            "ecg_signals_sim/large's 4,000; the simulator draws every class, mi's ST elevation "
            "included, as often as the others) and then fine-tuned on the real pages with the "
            "default recipe.",
            arms=(Arm("pretrain_sim", {**_SIM, "dataset.config": "large"},
                      config="configs/signals.py:pretrain", per_fold=False,
                      smoke_overrides={**_SIM, "dataset.config": "tiny"}),
                  Arm("scratch"),
                  Arm("finetune", needs={"init_from": "pretrain_sim"})),
            config="configs/signals.py", overrides={"saliency.num_pages": 0},
            hidden=("pretrain_sim",)),
        Ablation(
            "pretraining",
            "Synthetic pre-training: pre-train on ecg_synth/large, then fine-tune on the target "
            "data with config.init_from, against training from scratch.",
            arms=(Arm("pretrain_synth", {"dataset.name": "ecg_synth", "dataset.config": "large",
                                         "data.val_fold": 1, "data.test_fold": 0},
                      per_fold=False,
                      smoke_overrides={"dataset.name": "ecg_synth", "dataset.config": "tiny"}),
                  Arm("scratch"),
                  Arm("finetune", needs={"init_from": "pretrain_synth"})),
            hidden=("pretrain_synth",)),
    )
}


def get(name: str) -> Ablation:
  if name not in ABLATIONS:
    raise ValueError(f"Unknown ablation {name!r}; available: {sorted(ABLATIONS)}.")
  return ABLATIONS[name]


def with_needs(ablation: Ablation, names: Sequence[str]) -> set[str]:
  """The arms `names` and every arm they need, directly or not; an unknown name is a ValueError
  naming it and the ablation's arms."""
  by_name = {a.name: a for a in ablation.arms}
  unknown = [n for n in names if n not in by_name]
  if unknown:
    raise ValueError(f"Ablation {ablation.name!r} has no arm {', '.join(map(repr, unknown))}; its "
                     f"arms: {', '.join(by_name)}.")
  selected, todo = set(), list(names)
  while todo:
    name = todo.pop()
    if name not in selected:
      selected.add(name)
      todo.extend(by_name[name].needs.values())
  return selected


def depth(arm: Arm, arms: Sequence[Arm]) -> int:
  """0 for an arm that needs none, else 1 + the depth of what it needs."""
  by_name = {a.name: a for a in arms}
  return max((1 + depth(by_name[n], arms) for n in arm.needs.values()), default=0)
