r"""Saliency maps for any classifier given as a logit function, summed per ECG lead.

  python -m ecgjax.saliency --workdir=runs/default --method=smoothgrad --out=runs/default/maps \
      --images 'pages/MI(1).jpg' 'pages/Normal(3).jpg'

The attribution methods are pure, jitted functions of `logit_fn(images) -> (B, num_classes)`, with
images float (B, H, W, C) in the model's value range, so they serve every model (the fused one
included) and know nothing of checkpoints:

- `vanilla_gradient`: d logit_target / d image.
- `smoothgrad`: the gradient averaged over `num_samples` noisy copies (Smilkov et al. 2017).
- `integrated_gradients`: (x - baseline) times the gradient averaged along the straight path
  (Sundararajan et al. 2017), trapezoid rule; the attributions sum to logit(x) - logit(baseline).
- `grad_cam`: Grad-CAM (Selvaraju et al. 2017) on a named layer, found inside `logit_fn` with Flax's
  method interception, so the model needs no hook of its own.

All noise samples and path points of all pages run as batched forward-backward passes, in chunks of
`chunk_size` (which bounds the memory), one jitted call per chunk: never a Python loop per sample.
Gradients of a batch are taken as the gradient of the summed target logits, which equals the
per-example gradients because an evaluation-mode model treats examples independently.

Then the page layout (`ecgjax.data.layout`) turns a map into the attribution in each of the twelve
lead panels and the rhythm strip (`per_lead`); `explain_pages` draws the overlay and a per-lead bar
chart and writes the numbers as JSON. `write_test_maps` is what the training job calls at its end.

Not here: training, the model zoo, or evaluation metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ecgjax import report
from ecgjax.classes import CLASS_NAMES
from ecgjax.data import layout as layout_lib
from ecgjax.data import pipeline
from ecgjax.data import transforms

LogitFn = Callable[[jax.Array], jax.Array]

METHODS: tuple[str, ...] = ("gradient", "smoothgrad", "integrated_gradients", "grad_cam")

# ---------------------------------------------------------------------------------------------
# Attribution methods (pure; each chunk of forward-backward passes is one jitted call).
# ---------------------------------------------------------------------------------------------


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images must be float in the model's value range, got {images.dtype}; "
                     "map uint8 pages with `pipeline.normalize(images, config.data.value_range)`.")


@functools.partial(jax.jit, static_argnames=("logit_fn",))
def _predicted(logit_fn: LogitFn, images: jax.Array) -> jax.Array:
  return jnp.argmax(logit_fn(images), axis=-1).astype(jnp.int32)


def _resolve_targets(logit_fn: LogitFn, images: jax.Array, targets: jax.Array | None) -> jax.Array:
  """`targets`, or the predicted classes when None."""
  if targets is None:
    return _predicted(logit_fn, images)
  targets = jnp.asarray(targets, jnp.int32)
  if targets.shape != images.shape[:1]:
    raise ValueError(f"targets must have shape ({images.shape[0]},) (one class per image), got "
                     f"{targets.shape}.")
  return targets


def _target_logit_sum(logit_fn: LogitFn, images: jax.Array, targets: jax.Array) -> jax.Array:
  logits = logit_fn(images)
  return jnp.sum(jnp.take_along_axis(logits, targets[:, None], axis=1))


def _target_gradients(logit_fn: LogitFn, images: jax.Array, targets: jax.Array) -> jax.Array:
  # One backward pass for the whole batch: in evaluation mode example b's logits depend on image b
  # alone, so the gradient of the sum is the stack of per-example gradients.
  return jax.grad(_target_logit_sum, argnums=1)(logit_fn, images, targets)


def _noisy_inputs(images, pages, samples, *, key, sigmas):
  """SmoothGrad's inputs: noise sample s of page p is keyed by fold_in(fold_in(key, p), s)."""
  keys = jax.vmap(lambda p, q: jax.random.fold_in(jax.random.fold_in(key, p), q))(pages, samples)
  noise = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:], jnp.float32))(keys)
  noisy = images[pages].astype(jnp.float32) + sigmas[pages, None, None, None] * noise
  return noisy.astype(images.dtype)


def _path_inputs(images, pages, points, *, base, alphas):
  """Integrated Gradients' inputs: point q of the straight path from the baseline to page p."""
  x, b = images[pages].astype(jnp.float32), base[pages].astype(jnp.float32)
  return (b + alphas[points, None, None, None] * (x - b)).astype(images.dtype)


@functools.partial(jax.jit, static_argnames=("logit_fn", "make_inputs"), donate_argnums=0)
def _chunk_step(total, images, targets, pages, points, weights, extra, *, logit_fn, make_inputs):
  """total[p] += weight * grad(logit_target)(input) for one chunk of (page, point) items."""
  inputs = make_inputs(images, pages, points, **extra)
  grads = _target_gradients(logit_fn, inputs, targets[pages]).astype(jnp.float32)
  return total.at[pages].add(grads * weights[:, None, None, None])


def _accumulated_gradients(logit_fn: LogitFn, make_inputs, images: jax.Array, targets: jax.Array,
                           pages: np.ndarray, points: np.ndarray, weights: np.ndarray,
                           chunk_size: int, **extra) -> jax.Array:
  """sum_i weights[i] * grad(logit_target)(make_inputs(images, pages[i], points[i])), per page.

  The N items run as chunks of `chunk_size` batched forward-backward passes, one jitted call each
  (compiled once: the last chunk is padded with zero-weight items). A host loop over chunks, rather
  than a loop inside one program, is what keeps memory bounded by one chunk: XLA keeps the buffers of
  unrolled chunks alive together, and runs a while loop's body without intra-op threads on CPU.
  Returns float32 (num_pages, H, W, C).
  """
  n = len(pages)
  chunk = max(1, min(int(chunk_size), n))
  pad = -n % chunk
  pages, points = (np.concatenate([a, np.zeros(pad, np.int32)]) for a in (pages, points))
  weights = np.concatenate([weights, np.zeros(pad, np.float32)])
  total = jnp.zeros(images.shape, jnp.float32)
  for start in range(0, n + pad, chunk):
    sl = slice(start, start + chunk)
    total = _chunk_step(total, images, targets, pages[sl], points[sl], weights[sl], extra,
                        logit_fn=logit_fn, make_inputs=make_inputs)
  return total


@functools.partial(jax.jit, static_argnames=("logit_fn",))
def vanilla_gradient(logit_fn: LogitFn, images: jax.Array,
                     targets: jax.Array | None = None) -> jax.Array:
  """d logit_target / d image, (B, H, W, C); `targets=None` explains the predicted classes."""
  _check_images(images)
  targets = _resolve_targets(logit_fn, images, targets)
  return _target_gradients(logit_fn, images, targets).astype(jnp.float32)


def smoothgrad(logit_fn: LogitFn, images: jax.Array, targets: jax.Array | None = None, *,
               key: jax.Array, num_samples: int = 50, noise_scale: float = 0.15,
               chunk_size: int = 16) -> jax.Array:
  """SmoothGrad: the gradient averaged over `num_samples` Gaussian-noised copies of each image.

  Args:
    logit_fn: images (B, H, W, C) -> logits (B, num_classes), evaluation mode.
    images: float (B, H, W, C) in the model's value range.
    targets: (B,) class indices to explain; None: the predicted classes (of the clean images).
    key: PRNG key; noise sample s of page b uses `fold_in(fold_in(key, b), s)`, so the result does
      not depend on `chunk_size`.
    num_samples: noisy copies per image.
    noise_scale: noise standard deviation as a fraction of each image's value span (max - min),
      the paper's convention (10-20% works best there).
    chunk_size: forward-backward passes per jitted call; bounds the memory, not the result.

  Returns:
    float32 (B, H, W, C) attributions.
  """
  images = jnp.asarray(images)
  _check_images(images)
  targets = _resolve_targets(logit_fn, images, targets)
  num_pages = images.shape[0]
  spans = (jnp.max(images, axis=(1, 2, 3)) - jnp.min(images, axis=(1, 2, 3))).astype(jnp.float32)
  pages = np.repeat(np.arange(num_pages, dtype=np.int32), num_samples)
  samples = np.tile(np.arange(num_samples, dtype=np.int32), num_pages)
  weights = np.full(len(pages), 1.0 / num_samples, np.float32)
  return _accumulated_gradients(logit_fn, _noisy_inputs, images, targets, pages, samples, weights,
                                chunk_size, key=key, sigmas=noise_scale * spans)


def integrated_gradients(logit_fn: LogitFn, images: jax.Array, targets: jax.Array | None = None,
                         *, baseline: jax.Array | float | None = None, steps: int = 64,
                         chunk_size: int = 16) -> jax.Array:
  """Integrated Gradients along the straight path from `baseline` to each image.

  The path integral is the trapezoid rule over `steps` equal intervals (`steps + 1` gradient
  evaluations per image); its error falls as 1/steps^2 on smooth stretches of the path.

  Args:
    logit_fn: images (B, H, W, C) -> logits (B, num_classes), evaluation mode.
    images: float (B, H, W, C) in the model's value range.
    targets: (B,) class indices to explain; None: the predicted classes.
    baseline: the reference input, broadcastable to `images` (a scalar, an image, a batch);
      None: zeros. For ECG pages a blank page (the top of the value range) means "no ink".
    steps: intervals of the path.
    chunk_size: forward-backward passes per jitted call; bounds the memory, not the result.

  Returns:
    float32 (B, H, W, C) attributions, summing per image to about
    logit_target(image) - logit_target(baseline) (see `completeness`).
  """
  images = jnp.asarray(images)
  _check_images(images)
  targets = _resolve_targets(logit_fn, images, targets)
  num_pages = images.shape[0]
  base = jnp.broadcast_to(jnp.asarray(0.0 if baseline is None else baseline, images.dtype),
                          images.shape)
  alphas = jnp.linspace(0.0, 1.0, steps + 1, dtype=jnp.float32)
  rule = np.full(steps + 1, 1.0 / steps, np.float32)
  rule[[0, steps]] = 0.5 / steps
  pages = np.repeat(np.arange(num_pages, dtype=np.int32), steps + 1)
  points = np.tile(np.arange(steps + 1, dtype=np.int32), num_pages)
  mean_grads = _accumulated_gradients(logit_fn, _path_inputs, images, targets, pages, points,
                                      rule[points], chunk_size, base=base, alphas=alphas)
  return (images.astype(jnp.float32) - base.astype(jnp.float32)) * mean_grads


@functools.partial(jax.jit, static_argnames=("logit_fn",))
def completeness(logit_fn: LogitFn, images: jax.Array, attributions: jax.Array,
                 targets: jax.Array | None = None,
                 baseline: jax.Array | float | None = None) -> tuple[jax.Array, jax.Array]:
  """(sum of attributions, logit_target(image) - logit_target(baseline)), each (B,)."""
  targets = _resolve_targets(logit_fn, images, targets)
  base = jnp.broadcast_to(jnp.asarray(0.0 if baseline is None else baseline, images.dtype),
                          images.shape)
  pick = lambda x: jnp.take_along_axis(logit_fn(x), targets[:, None], axis=1)[:, 0]
  return jnp.sum(attributions, axis=(1, 2, 3)), pick(images) - pick(base)


@dataclasses.dataclass(frozen=True)
class Layer:
  """A module called while computing the logits: its path, class name and output shape."""
  path: str
  kind: str
  shape: tuple[int, ...]


def layers(logit_fn: LogitFn, images: jax.Array) -> list[Layer]:
  """Every Flax module `logit_fn` calls, in call order (computes shapes only, no FLOPs)."""
  found = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = "/".join(context.module.path)
    if context.method_name == "__call__" and path and isinstance(out, jax.Array):
      found.append(Layer(path, type(context.module).__name__, tuple(out.shape)))
    return out

  with nn.intercept_methods(record):
    # A new function each time: eval_shape caches traces by function, and a cached trace would
    # run no module method, so nothing would be recorded.
    jax.eval_shape(lambda x: logit_fn(x), images)  # pylint: disable=unnecessary-lambda
  if not found:
    raise ValueError("logit_fn calls no Flax module method that returns an array; saliency by "
                     "layer needs an un-jitted logit_fn calling a Linen model's apply.")
  return found


def last_conv_layer(logit_fn: LogitFn, images: jax.Array) -> str:
  """The path of the last convolution (a module whose class name has "Conv") with spatial output."""
  convs = [l.path for l in layers(logit_fn, images) if "Conv" in l.kind and len(l.shape) == 4]
  if not convs:
    raise ValueError("grad_cam: logit_fn calls no Flax convolution module with a (B, h, w, c) "
                     "output; name a layer with `layer=`.")
  return convs[-1]


@functools.partial(jax.jit, static_argnames=("logit_fn", "layer"))
def grad_cam(logit_fn: LogitFn, images: jax.Array, targets: jax.Array | None = None, *,
             layer: str | None = None) -> jax.Array:
  """Grad-CAM on the output of the Flax module at path `layer` (e.g. "stage3_conv0").

  The layer's activation A is captured, and d logit / d A obtained by adding a zero perturbation
  to it, both through `flax.linen.intercept_methods`, so any Linen model inside `logit_fn` works.

  Args:
    logit_fn: images -> logits, calling a Flax Linen model.
    images: float (B, H, W, C) in the model's value range.
    targets: (B,) class indices to explain; None: the predicted classes.
    layer: "/"-joined module path; None: the last convolution (`last_conv_layer`).

  Returns:
    float32 (B, H, W, 1): relu(sum_k mean(dy/dA_k) A_k), bilinearly resized to the image.
  """
  _check_images(images)
  targets = _resolve_targets(logit_fn, images, targets)
  found = layers(logit_fn, images)
  layer = layer or last_conv_layer(logit_fn, images)
  matches = [l for l in found if l.path == layer]
  if len(matches) != 1 or len(matches[0].shape) != 4:
    spatial = [l.path for l in found if len(l.shape) == 4]
    problem = ("is not called" if not matches else
               f"is called {len(matches)} times" if len(matches) > 1 else
               f"has output shape {matches[0].shape}, not (B, h, w, c)")
    raise ValueError(f"grad_cam: layer {layer!r} {problem}; layers with spatial outputs: {spatial}.")

  def target_logits(delta):
    captured = []

    def perturb(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and "/".join(context.module.path) == layer:
        captured.append(out)
        out = out + delta.astype(out.dtype)
      return out

    with nn.intercept_methods(perturb):
      value = _target_logit_sum(logit_fn, images, targets)
    if len(captured) != 1:  # A jitted logit_fn may replay a cached trace without our hook.
      raise ValueError(f"grad_cam: layer {layer!r} was seen {len(captured)} times while computing "
                       "the logits; pass an un-jitted logit_fn.")
    return value, captured[0]

  delta = jnp.zeros(matches[0].shape, jnp.float32)
  grads, activation = jax.grad(target_logits, has_aux=True)(delta)
  weights = jnp.mean(grads, axis=(1, 2), keepdims=True)
  cam = jax.nn.relu(jnp.sum(weights * activation.astype(jnp.float32), axis=-1))
  cam = jax.image.resize(cam, images.shape[:3], method="linear")
  return cam[..., None]


def attribute(method: str, logit_fn: LogitFn, images: jax.Array,
              targets: jax.Array | None = None, *, key: jax.Array | None = None,
              baseline: jax.Array | float | None = None, num_samples: int = 50,
              noise_scale: float = 0.15, steps: int = 64, layer: str | None = None,
              chunk_size: int = 16) -> jax.Array:
  """The attributions of the method named `method` (one of `METHODS`), (B, H, W, C or 1)."""
  if method == "gradient":
    return vanilla_gradient(logit_fn, images, targets)
  if method == "smoothgrad":
    if key is None:
      raise ValueError("smoothgrad needs a PRNG key (key=jax.random.key(seed)).")
    return smoothgrad(logit_fn, images, targets, key=key, num_samples=num_samples,
                      noise_scale=noise_scale, chunk_size=chunk_size)
  if method == "integrated_gradients":
    return integrated_gradients(logit_fn, images, targets, baseline=baseline, steps=steps,
                                chunk_size=chunk_size)
  if method == "grad_cam":
    return grad_cam(logit_fn, images, targets, layer=layer)
  raise ValueError(f"Unknown saliency method {method!r} (config.saliency.method or --method); "
                   f"available: {METHODS}.")


# ---------------------------------------------------------------------------------------------
# From pixels to leads.
# ---------------------------------------------------------------------------------------------


def heat_map(attributions: np.ndarray) -> np.ndarray:
  """(..., H, W, C) attributions -> (..., H, W) non-negative mass: |a| summed over channels."""
  return np.abs(np.asarray(attributions, np.float64)).sum(axis=-1)


def content_box(source_hw: tuple[int, int], target_hw: tuple[int, int],
                resize_mode: str = "pad") -> tuple[int, int, int, int]:
  """Where the source image lands in the model input: (top, left, height, width) in pixels."""
  return transforms.fit_box(source_hw, target_hw, resize_mode)


def lead_pixel_boxes(box: tuple[int, int, int, int],
                     lead_boxes: Mapping[str, tuple[float, float, float, float]]
                     ) -> dict[str, tuple[int, int, int, int]]:
  """Fractional (left, top, right, bottom) panel boxes -> pixel (row0, row1, col0, col1) slices.

  A pixel belongs to a box when its centre does, so boxes that share an edge share no pixel.
  """
  top, left, height, width = box
  edge = lambda offset, size, f: int(np.ceil(offset + f * size - 0.5))
  return {name: (edge(top, height, t), edge(top, height, b), edge(left, width, l),
                 edge(left, width, r))
          for name, (l, t, r, b) in lead_boxes.items()}


def lead_sums(values: np.ndarray, box: tuple[int, int, int, int],
              lead_boxes: Mapping[str, tuple[float, float, float, float]]) -> dict[str, float]:
  """The sum of an (H, W) map over each lead's box (boxes as fractions of the panel at `box`)."""
  return {name: float(values[r0:r1, c0:c1].sum())
          for name, (r0, r1, c0, c1) in lead_pixel_boxes(box, lead_boxes).items()}


def per_lead(attributions: np.ndarray, box: tuple[int, int, int, int],
             lead_boxes: Mapping[str, tuple[float, float, float, float]] | None = None
             ) -> dict[str, Any]:
  """Which leads drove one prediction: attribution per lead box of one (H, W, C) map.

  Returns:
    `share`: each lead's fraction of the image's absolute attribution mass (with `other`, the rest:
    calibration pulses, labels, margins and padding, they sum to 1). `density`: share divided by
    the box's fraction of the image area, so 1 is the image's average and the rhythm strip (four
    times a lead's area) is not favoured for its size. `signed`: each lead's sum of signed
    attributions (for Integrated Gradients, its part of logit(x) - logit(baseline)). `ranking`:
    the leads by density, largest first.
  """
  lead_boxes = layout_lib.lead_boxes() if lead_boxes is None else lead_boxes
  mass = heat_map(attributions)
  total = float(mass.sum())
  share = {k: (v / total if total > 0 else 0.0) for k, v in lead_sums(mass, box, lead_boxes).items()}
  area = lead_sums(np.full(mass.shape, 1.0 / mass.size), box, lead_boxes)
  density = {k: (share[k] / area[k] if area[k] > 0 else 0.0) for k in share}
  signed = lead_sums(np.asarray(attributions, np.float64).sum(-1), box, lead_boxes)
  return {"share": share, "other": max(0.0, 1.0 - sum(share.values())), "density": density,
          "signed": signed, "ranking": sorted(density, key=density.get, reverse=True)}


# ---------------------------------------------------------------------------------------------
# Pages in, figures and numbers out.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Page:
  """A model input with what is needed to explain it."""
  name: str  # Used for file names.
  image: np.ndarray  # uint8 (H, W, C) at the model's input size.
  box: tuple[int, int, int, int]  # content_box of the panel in `image`.
  label: int | None = None  # The true class, if known.
  source: str = ""


def prepare_page(rgb: np.ndarray, data_config: ml_collections.ConfigDict, name: str,
                 label: int | None = None, source: str = "") -> Page:
  """A decoded panel (uint8 H, W, 3) -> the model input, with the same ops as `pipeline.Preprocess`."""
  image = pipeline.Preprocess(data_config).process(rgb)
  box = content_box(rgb.shape[:2], tuple(data_config.image_size), data_config.resize_mode)
  return Page(name=name, image=image, box=box, label=label, source=source)


def page_from_example(example: Mapping[str, Any], data_config: ml_collections.ConfigDict,
                      name: str) -> Page:
  """A `pipeline.Source` example (an encoded panel crop) -> Page."""
  source = example.get("source_path", b"")
  source = source.decode() if isinstance(source, bytes) else str(source)
  rgb = pipeline.decode_image(example["image"], tuple(data_config.image_size),
                              what=f"image of {source!r}")
  return prepare_page(rgb, data_config, name, int(example["label"]), source)


def page_from_file(path: str, data_config: ml_collections.ConfigDict, crop_panel: bool = True,
                   label: int | None = None) -> Page:
  """A page on disk (a scan of the whole page, or with crop_panel=False a panel crop) -> Page."""
  rgb, _ = pipeline.read_page(path, crop=crop_panel)
  name = os.path.splitext(os.path.basename(path))[0]
  return prepare_page(rgb, data_config, name, label, path)


def _safe_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_overlay(page: Page, heat: np.ndarray, title: str, path: str,
                 lead_boxes: Mapping[str, tuple[float, float, float, float]]) -> None:
  """The page with the heat map over it and the lead boxes outlined."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from scipy import ndimage  # pylint: disable=g-import-not-at-top

  h, w = heat.shape
  # Gradients sit on one-pixel traces; a little blur makes the map readable (display only).
  shown = ndimage.gaussian_filter(heat, sigma=max(1.0, w / 200))
  top = np.percentile(shown, 99.5)
  shown = np.clip(shown / top, 0, 1) if top > 0 else shown
  fig, ax = plt.subplots(figsize=(10, 10 * h / w + 0.6), dpi=100)
  image = page.image[..., 0] if page.image.shape[-1] == 1 else page.image
  ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
  ax.imshow(shown, cmap="inferno", alpha=0.55 * shown ** 0.5, vmin=0, vmax=1)
  for name, (r0, r1, c0, c1) in lead_pixel_boxes(page.box, lead_boxes).items():
    ax.add_patch(patches.Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, lw=0.6,
                                   edgecolor="tab:cyan"))
    ax.text(c0 + 1, r0 + 1, name, color="tab:cyan", fontsize=8, va="top")
  ax.set_title(title, fontsize=10)
  ax.axis("off")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_leads(leads: Mapping[str, Any], title: str, path: str) -> None:
  """A bar chart of each lead's attribution density (1 = the image's average), in report order."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  names = [*layout_lib.LEADS, layout_lib.RHYTHM]
  names += [n for n in leads["density"] if n not in names]
  values = [leads["density"].get(n, 0.0) for n in names]
  top = set(leads["ranking"][:3])
  fig, ax = plt.subplots(figsize=(8, 3.8), dpi=100)
  ax.bar(range(len(values)), values,
         color=["tab:red" if n in top else "tab:blue" for n in names])
  ax.axhline(1.0, color="gray", ls="--", lw=0.8)
  ax.set_xticks(range(len(values)), names, rotation=45)
  ax.set_ylabel("attribution density\n(1 = page average)")
  ax.set_title(f"{title}\nleads that drove the prediction: {', '.join(leads['ranking'][:3])}",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def explain_pages(logit_fn: LogitFn, pages: Sequence[Page], out_dir: str, *, method: str,
                  value_range: Sequence[float] = (-1.0, 1.0), seed: int = 0,
                  lead_boxes: Mapping[str, tuple[float, float, float, float]] | None = None,
                  pages_per_call: int = 4, **options) -> dict[str, Any]:
  """Attributions for `pages`, written as overlay and bar-chart PNGs and one JSON.

  Pages go to the attribution method `pages_per_call` at a time (all with the same shape, so one
  compilation); page i's noise is keyed by (seed, i // pages_per_call, i % pages_per_call).

  The predicted class is explained. Integrated Gradients starts from a blank page (every pixel at
  the top of `value_range`: paper without ink), and the JSON records its completeness.

  Returns:
    {"json": path, "pages": [{"overlay": path, "leads": path}, ...]}.
  """
  if not pages:
    raise ValueError("explain_pages: no pages given.")
  lead_boxes = layout_lib.lead_boxes() if lead_boxes is None else lead_boxes
  os.makedirs(out_dir, exist_ok=True)
  baseline = float(value_range[1])
  key = jax.random.key(seed)
  probs, attributions, gaps = [], [], []
  for start in range(0, len(pages), pages_per_call):
    group = [p.image for p in pages[start:start + pages_per_call]]
    group += [group[-1]] * (pages_per_call - len(group))  # Same shape every call: one compile.
    images = pipeline.normalize(jnp.asarray(np.stack(group)), value_range)
    logits = np.asarray(logit_fn(images), np.float64)
    targets = jnp.asarray(logits.argmax(-1), jnp.int32)
    attr = attribute(method, logit_fn, images, targets,
                     key=jax.random.fold_in(key, start // pages_per_call), baseline=baseline,
                     **options)
    if method == "integrated_gradients":
      gaps.append(np.stack(completeness(logit_fn, images, attr, targets, baseline), axis=-1))
    probs.append(report.softmax(np.asarray(logits, np.float64), axis=-1))
    attributions.append(np.asarray(attr))
  num = len(pages)
  probs = np.concatenate(probs)[:num]
  predicted = probs.argmax(-1)
  attributions = np.concatenate(attributions)[:num]
  gaps = np.concatenate(gaps)[:num] if gaps else None

  records, written = [], []
  for i, page in enumerate(pages):
    leads = per_lead(attributions[i], page.box, lead_boxes)
    pred = CLASS_NAMES[predicted[i]]
    true = CLASS_NAMES[page.label] if page.label is not None else "unknown"
    title = (f"{page.name} ({method})\npredicted {pred} (p={probs[i, predicted[i]]:.2f}), "
             f"true {true}" + (f" (p={probs[i, page.label]:.2f})" if page.label is not None else ""))
    stem = os.path.join(out_dir, f"{i:02d}_{_safe_name(page.name)[:40]}_{method}")
    overlay, bars = stem + "_overlay.png", stem + "_leads.png"
    plot_overlay(page, heat_map(attributions[i]), title, overlay, lead_boxes)
    plot_leads(leads, title, bars)
    record = {
        "page": page.name, "source": page.source, "method": method,
        "true_class": None if page.label is None else CLASS_NAMES[page.label],
        "predicted_class": pred,
        "probabilities": dict(zip(CLASS_NAMES, map(float, probs[i]))),
        "explained_class": pred, "content_box": list(page.box), "lead_share": leads["share"],
        "other_share": leads["other"], "lead_density": leads["density"],
        "lead_signed_sum": leads["signed"],
        "top_leads": leads["ranking"][:3], "overlay": overlay, "lead_chart": bars,
    }
    if gaps is not None:
      record["completeness"] = {"attribution_sum": float(gaps[i, 0]),
                                "logit_difference": float(gaps[i, 1]), "baseline": baseline}
    records.append(record)
    written.append({"overlay": overlay, "leads": bars})
  json_path = os.path.join(out_dir, f"saliency_{method}.json")
  with open(json_path, "w") as f:
    json.dump({"method": method, "options": options, "seed": seed, "pages": records}, f, indent=2)
  return {"json": json_path, "pages": written}


def write_test_maps(workdir: str, source: pipeline.Source,
                    config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Maps of the first `config.saliency.num_pages` pages of `source` under `workdir/saliency/`.

  Uses the checkpoint the test report uses (`config.eval.checkpoint`) and `config.saliency.method`.
  In a multi-process run every process must call it (the restore is collective); process 0 alone
  computes and writes the maps, the others return an empty dict.
  """
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  loaded = checkpoints.load_model(workdir, config.eval.checkpoint)
  if jax.process_index() != 0:
    return {}
  num = min(int(config.saliency.num_pages), len(source))
  pages = []
  for i in range(num):
    example = source[i]
    image_id = example.get("image_id", b"")
    image_id = image_id.decode() if isinstance(image_id, bytes) else str(image_id)
    pages.append(page_from_example(example, config.data, image_id or f"test{i}"))
  method = config.saliency.method
  options = {"smoothgrad": {"num_samples": int(config.saliency.num_samples),
                            "chunk_size": int(config.saliency.chunk_size)},
             "integrated_gradients": {"steps": int(config.saliency.steps),
                                      "chunk_size": int(config.saliency.chunk_size)}}
  return explain_pages(loaded.logit_fn, pages, os.path.join(workdir, "saliency"), method=method,
                       value_range=config.data.value_range, seed=int(config.seed),
                       **options.get(method, {}))


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Run directory (config.json and checkpoints/).")
  flags.DEFINE_multi_string("images", [], "Page image files; more may follow as plain arguments "
                            "(so a shell glob works: --images pages/*.jpg).")
  flags.DEFINE_string("out", None, "Output directory for the PNGs and the JSON.")
  flags.DEFINE_enum("method", "smoothgrad", METHODS, "Attribution method.")
  flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
  flags.DEFINE_bool("crop_panel", True, "Crop each page to its grid panel first, as the data sets "
                    "do; --nocrop_panel for images already cropped.")
  flags.DEFINE_integer("seed", 0, "PRNG seed of the SmoothGrad noise.")
  flags.DEFINE_integer("num_samples", 50, "SmoothGrad: noisy copies per page.")
  flags.DEFINE_float("noise_scale", 0.15, "SmoothGrad: noise std / the page's value span.")
  flags.DEFINE_integer("steps", 64, "Integrated Gradients: path intervals.")
  flags.DEFINE_string("layer", None, "Grad-CAM: module path (default: the last convolution).")
  flags.DEFINE_integer("chunk_size", 16, "Forward-backward passes per step (memory bound).")
  flags.mark_flags_as_required(["workdir", "out"])
  return flags.FLAGS


def main(argv: Sequence[str]) -> None:
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  from ecgjax.classes import class_index  # pylint: disable=g-import-not-at-top
  from ecgjax.data import ecg_images  # pylint: disable=g-import-not-at-top
  flags = FLAGS
  paths = list(flags.images) + list(argv[1:])
  if not paths:
    raise ValueError("No pages: pass --images FILE... .")
  loaded = checkpoints.load_model(flags.workdir, flags.checkpoint)
  pages, failed = [], []
  for path in paths:  # A bad file is named and skipped; the good pages are still explained.
    label = ecg_images.class_of_path(os.path.abspath(path))  # The release's folder names.
    try:
      pages.append(page_from_file(path, loaded.config.data, flags.crop_panel,
                                  None if label is None else class_index(label)))
    except (OSError, ValueError) as e:
      failed.append(path)
      print(f"error: {e}", file=sys.stderr)
  if not pages:
    sys.exit(f"No page could be read ({len(failed)} failed); nothing written.")
  options = {"gradient": {}, "grad_cam": {"layer": flags.layer},
             "smoothgrad": {"num_samples": flags.num_samples, "noise_scale": flags.noise_scale,
                            "chunk_size": flags.chunk_size},
             "integrated_gradients": {"steps": flags.steps, "chunk_size": flags.chunk_size},
             }[flags.method]
  out = explain_pages(loaded.logit_fn, pages, flags.out, method=flags.method,
                      value_range=loaded.config.data.value_range, seed=flags.seed, **options)
  print(f"Wrote {out['json']} and {2 * len(out['pages'])} PNGs under {flags.out} "
        f"({flags.method}, checkpoint step {loaded.step}).")
  if failed:
    sys.exit(f"{len(failed)} of {len(paths)} pages could not be read: {', '.join(failed)}.")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from ecgjax.kernels import hugepages  # pylint: disable=g-import-not-at-top
  hugepages.ensure()
  # Defined only when run as a command: `ecgjax.main` defines --workdir too, and imports this module.
  FLAGS = _define_flags()
  app.run(main)
