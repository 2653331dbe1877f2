"""Attribution methods: how much each input pixel moved a classifier's logit.

The methods are pure, jitted functions of `logit_fn(images) -> (B, num_classes)`, with images float
(B, H, W, C) in the model's value range, so they serve every model (the fused one included) and know
nothing of checkpoints. The gradient methods (all but Grad-CAM) take signals (B, T, C) as well, for
the 1-D models (`ecgjax.saliency.signals`):

- `vanilla_gradient`: d logit_target / d image.
- `smoothgrad`: the gradient averaged over `num_samples` noisy copies (Smilkov et al. 2017).
- `integrated_gradients`: (x - baseline) times the gradient averaged along the straight path
  (Sundararajan et al. 2017), trapezoid rule; the attributions sum to logit(x) - logit(baseline),
  which `completeness` measures.
- `grad_cam`: Grad-CAM (Selvaraju et al. 2017) on a named layer, found inside `logit_fn` with Flax's
  method interception (`layers`, `last_feature_layer`), so the model needs no hook of its own.
- `attribute`: one of `METHODS` chosen by name.
- `Contrast`: the pairwise logit differences of a model, so any method explains why the model
  prefers one class over another (`contrast_targets`), e.g. the predicted class over the runner-up.

All noise samples and path points of all pages run as batched forward-backward passes, in chunks of
`chunk_size` (which bounds the memory), one jitted call per chunk: never a Python loop per sample.
Gradients of a batch are taken as the gradient of the summed target logits, which equals the
per-example gradients because an evaluation-mode model treats examples independently.

Not here: pages, lead geometry (`leads`), figures and files (`figures`, `explain`), checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LogitFn = Callable[[jax.Array], jax.Array]

METHODS: tuple[str, ...] = ("gradient", "smoothgrad", "integrated_gradients", "grad_cam")


def _check_images(images: jax.Array, spatial: bool = False) -> None:
  """Float (B, H, W, C) pages, or with `spatial=False` also (B, T, C) signals."""
  if images.ndim != 4 and (spatial or images.ndim != 3):
    raise ValueError(f"images must be (B, H, W, C){'' if spatial else ' or signals (B, T, C)'}, "
                     f"got shape {images.shape}.")
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


def _per_item(values: jax.Array, ndim: int) -> jax.Array:
  """(N,) -> (N, 1, ..., 1), broadcasting against N inputs of `ndim` dimensions."""
  return values.reshape(values.shape + (1,) * (ndim - 1))


def _noisy_inputs(images, pages, samples, *, key, sigmas):
  """SmoothGrad's inputs: noise sample s of page p is keyed by fold_in(fold_in(key, p), s)."""
  keys = jax.vmap(lambda p, q: jax.random.fold_in(jax.random.fold_in(key, p), q))(pages, samples)
  noise = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:], jnp.float32))(keys)
  noisy = images[pages].astype(jnp.float32) + _per_item(sigmas[pages], images.ndim) * noise
  return noisy.astype(images.dtype)


def _path_inputs(images, pages, points, *, base, alphas):
  """Integrated Gradients' inputs: point q of the straight path from the baseline to page p."""
  x, b = images[pages].astype(jnp.float32), base[pages].astype(jnp.float32)
  return (b + _per_item(alphas[points], images.ndim) * (x - b)).astype(images.dtype)


@functools.partial(jax.jit, static_argnames=("logit_fn", "make_inputs"), donate_argnums=0)
def _chunk_step(total, images, targets, pages, points, weights, extra, *, logit_fn, make_inputs):
  """total[p] += weight * grad(logit_target)(input) for one chunk of (page, point) items."""
  inputs = make_inputs(images, pages, points, **extra)
  grads = _target_gradients(logit_fn, inputs, targets[pages]).astype(jnp.float32)
  return total.at[pages].add(grads * _per_item(weights, grads.ndim))


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
  axes = tuple(range(1, images.ndim))
  spans = (jnp.max(images, axis=axes) - jnp.min(images, axis=axes)).astype(jnp.float32)
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
  return jnp.sum(attributions, axis=tuple(range(1, attributions.ndim))), pick(images) - pick(base)


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


def last_feature_layer(logit_fn: LogitFn, images: jax.Array) -> str:
  """The path of the last module call with a spatial (B, h, w, c) output: the feature maps the head
  pools, after the last convolution's BatchNorm where it has one.

  Grad-CAM on the convolution's own output instead misses BatchNorm's per-channel scale (whose sign
  may flip a channel) and shift; on synthetic MI pages it localised the territory worse (lift 1.82
  against 2.20, `experiments/explain_eval.py`).
  """
  spatial = [l.path for l in layers(logit_fn, images) if len(l.shape) == 4]
  if not spatial:
    raise ValueError("grad_cam: logit_fn calls no Flax module with a (B, h, w, c) output; name a "
                     "layer with `layer=`.")
  return spatial[-1]


@functools.partial(jax.jit, static_argnames=("logit_fn", "layer"))
def grad_cam(logit_fn: LogitFn, images: jax.Array, targets: jax.Array | None = None, *,
             layer: str | None = None) -> jax.Array:
  """Grad-CAM on the output of the Flax module at path `layer` (e.g. "stage3_bn0").

  The layer's activation A is captured, and d logit / d A obtained by adding a zero perturbation
  to it, both through `flax.linen.intercept_methods`, so any Linen model inside `logit_fn` works.

  Args:
    logit_fn: images -> logits, calling a Flax Linen model.
    images: float (B, H, W, C) in the model's value range.
    targets: (B,) class indices to explain; None: the predicted classes.
    layer: "/"-joined module path; None: the last spatial feature maps (`last_feature_layer`).

  Returns:
    float32 (B, H, W, 1): relu(sum_k mean(dy/dA_k) A_k), bilinearly resized to the image.
  """
  _check_images(images, spatial=True)
  targets = _resolve_targets(logit_fn, images, targets)
  found = layers(logit_fn, images)
  layer = layer or last_feature_layer(logit_fn, images)
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


@dataclasses.dataclass(frozen=True)
class Contrast:
  """`logit_fn`'s pairwise logit differences: column i * C + j of its output is logit_i - logit_j.

  Explaining target `contrast_targets(i, j, C)` explains the margin of class i over class j. With
  Integrated Gradients the attributions then add up to that margin's change from the baseline, so
  a lead's signed sum is its contribution, in logits, to choosing i rather than j. Hashable (by
  `logit_fn`), so it is a static argument of the jitted methods like any logit function.
  """
  logit_fn: LogitFn

  def __call__(self, images: jax.Array) -> jax.Array:
    logits = self.logit_fn(images)
    return (logits[:, :, None] - logits[:, None, :]).reshape(logits.shape[0], -1)


def contrast_targets(first: jax.Array, second: jax.Array, num_classes: int) -> jax.Array:
  """The `Contrast` column of logit[first] - logit[second], per example."""
  return jnp.asarray(first, jnp.int32) * num_classes + jnp.asarray(second, jnp.int32)


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
