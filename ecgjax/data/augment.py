"""Training augmentation as jitted JAX ops on the device, chained by the spec in `config.data.augment`.

A spec such as ``"rotate(2)|scale(0.05)|translate(0.02)|brightness(0.15)|contrast(0.15)"`` names ops
registered here. `parse(spec)` builds an `Augmentation`, a hashable value that the train step takes
as a static argument; `Augmentation.apply(images, key)` runs inside the jitted step on the whole
(sharded) batch and returns float32 images on the 0..255 scale. Each example draws its own strengths
from `key`, which the step derives from the run's seed and the step number: a resumed run sees the
same augmentation, and so does a batch split over any number of devices.

Geometric ops (rotate, scale, translate, shift, perspective) each give a 3x3 projective map per
example; consecutive ones are multiplied into one map and the image is resampled once (bilinear),
with the paper colour seen at the image's edge filled in where the page moved away, never black.
Photometric ops (brightness, contrast, blur, noise) act on the float image and clip to 0..255.

Signal ops (amplitude, lead_amplitude, time_shift, signal_noise, drop_leads) act instead on the
digitized leads of a signal model (`config.data.input='signals'`: float32 (B, T, 13) in mV, each
lead 0 outside the 2.5 s the page shows it): what varies between real pages after digitization is
the gain of the print and scan, where the digitizer places the time origin, its error around the
trace, and a lead it could not read (0, as an unread lead is). A spec is either page ops or signal
ops; `Augmentation.apply` refuses a mixture for the input it is given.

Augmentation respects what an ECG page is: there is deliberately no horizontal flip (it reverses
time) and no vertical flip (it inverts voltage), and rotation is capped at `MAX_ROTATION_DEGREES`.

The deterministic functions (`warp`, `rotation_map`, ..., `gaussian_blur`) take explicit parameters;
tests compare each with the PIL operation it replaced. Not here: decoding and resizing pages, which
happen once per run on the host (`ecgjax.data.decoded`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ecgjax.data import transforms

# A page is photographed a little askew, never sideways: larger angles make leads cross rows.
MAX_ROTATION_DEGREES = 10.0

_REGISTRY = transforms.Registry("Augmentation")
register = _REGISTRY.register
available = _REGISTRY.available


def _check_range(name: str, value: float, low: float, high: float) -> None:
  if not isinstance(value, (int, float)) or not low <= value <= high:
    raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}.")


# ---------------------------------------------------------------------------------------------
# Deterministic building blocks, on batches. Coordinates are PIL's: pixel (i, j) covers the square
# [j, j + 1) x [i, i + 1), so its centre is (j + 0.5, i + 0.5) and the image centre is (w/2, h/2).
# A map takes an output position (x, y, 1) to the input position it samples.
# ---------------------------------------------------------------------------------------------


def _about_centre(hw: tuple[int, int], linear: jax.Array, shift: jax.Array | None = None
                  ) -> jax.Array:
  """(B, 3, 3) maps from output to input of `linear` (B, 2, 2) about the centre, then `shift`."""
  h, w = hw
  centre = jnp.array([w / 2.0, h / 2.0], jnp.float32)
  (a, b), (c, d) = linear[..., 0, :].T, linear[..., 1, :].T  # The closed form compiles faster.
  inv = jnp.stack([jnp.stack([d, -b], -1), jnp.stack([-c, a], -1)], -2) / (a * d - b * c)[
      ..., None, None]
  shift = jnp.zeros(linear.shape[:-2] + (2,), jnp.float32) if shift is None else shift
  # output p = A (q - c) + c + t  =>  q = A^-1 (p - c - t) + c
  offset = centre - jnp.einsum("...ij,...j->...i", inv, centre + shift)
  top = jnp.concatenate([inv, offset[..., None]], axis=-1)
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], jnp.float32), top.shape[:-2] + (1, 3))
  return jnp.concatenate([top, bottom], axis=-2)


def rotation_map(degrees: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Rotation about the centre, anticlockwise as displayed for positive angles (as PIL's rotate)."""
  t = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  cos, sin = jnp.cos(t), jnp.sin(t)
  # Image rows grow downwards, so an anticlockwise turn on screen has this sign pattern.
  linear = jnp.stack([jnp.stack([cos, sin], -1), jnp.stack([-sin, cos], -1)], -2)
  return _about_centre(hw, linear)


def scale_map(factor: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Zoom about the centre by `factor` (> 1 zooms in)."""
  factor = jnp.asarray(factor, jnp.float32)
  return _about_centre(hw, factor[..., None, None] * jnp.eye(2, dtype=jnp.float32))


def translation_map(dx: jax.Array, dy: jax.Array) -> jax.Array:
  """Moves the content by (dx, dy) pixels (right and down)."""
  dx, dy = jnp.broadcast_arrays(jnp.asarray(dx, jnp.float32), jnp.asarray(dy, jnp.float32))
  one, zero = jnp.ones_like(dx), jnp.zeros_like(dx)
  return jnp.stack([jnp.stack([one, zero, -dx], -1), jnp.stack([zero, one, -dy], -1),
                    jnp.stack([zero, zero, one], -1)], -2)


def perspective_map(moves: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """The projective map under which the page's corners appear moved by `moves` (B, 4, 2) pixels.

  Corners in order top-left, top-right, bottom-right, bottom-left, as (x, y). This is the map PIL's
  ``Image.transform(..., PERSPECTIVE, coeffs)`` applies for the same corner moves.
  """
  h, w = hw
  corners = jnp.array([[0, 0], [w, 0], [w, h], [0, h]], jnp.float32)
  moved = corners + moves
  x, y = moved[..., 0], moved[..., 1]
  u, v = jnp.broadcast_to(corners[:, 0], x.shape), jnp.broadcast_to(corners[:, 1], x.shape)
  one, zero = jnp.ones_like(x), jnp.zeros_like(x)
  rows_u = jnp.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
  rows_v = jnp.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
  rows = jnp.stack([rows_u, rows_v], -2).reshape(*x.shape[:-1], 8, 8)
  rhs = jnp.stack([u, v], -1).reshape(*x.shape[:-1], 8)
  coeffs = jnp.linalg.solve(rows, rhs[..., None])[..., 0]
  return jnp.concatenate([coeffs, jnp.ones_like(coeffs[..., :1])], -1).reshape(
      *coeffs.shape[:-1], 3, 3)


def paper_colour(images: jax.Array) -> jax.Array:
  """(B, C): the paper colour at each image's edge, never black.

  The mean of those pixels of the outermost two rows and columns that are at least as bright as
  the ring's average: the paper, without the trace and grid lines that reach the edge. (A median
  would do as well, but XLA:CPU sorts slowly; this costs nothing.)
  """
  b, _, _, c = images.shape
  ring = jnp.concatenate([images[:, :2].reshape(b, -1, c), images[:, -2:].reshape(b, -1, c),
                          images[:, :, :2].reshape(b, -1, c), images[:, :, -2:].reshape(b, -1, c)],
                         axis=1).astype(jnp.float32)
  brightness = ring.mean(axis=-1)  # (B, N)
  bright = (brightness >= brightness.mean(axis=1, keepdims=True))[..., None]
  return (ring * bright).sum(axis=1) / jnp.maximum(bright.sum(axis=1), 1)


def warp(images: jax.Array, maps: jax.Array, fill: jax.Array) -> jax.Array:
  """Bilinear resampling of (B, H, W, C) `images` by (B, 3, 3) output-to-input `maps`.

  Output pixels whose source lies outside the image take `fill` (B, C). Returns float32.
  """
  b, h, w, c = images.shape
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5,
                        jnp.arange(w, dtype=jnp.float32) + 0.5, indexing="ij")
  points = jnp.stack([xs.ravel(), ys.ravel(), jnp.ones(h * w, jnp.float32)])  # (3, HW)
  source = jnp.einsum("bij,jn->bin", maps.astype(jnp.float32), points)  # (B, 3, HW)
  u = source[:, 0] / source[:, 2]
  v = source[:, 1] / source[:, 2]
  inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
  # Pixel centres sit at +0.5: the continuous position u is between columns floor(u - 0.5) and +1.
  u, v = u - 0.5, v - 0.5
  x0, y0 = jnp.floor(u), jnp.floor(v)
  fx, fy = (u - x0)[..., None], (v - y0)[..., None]
  x0 = x0.astype(jnp.int32)
  y0 = y0.astype(jnp.int32)
  flat = images.reshape(b, h * w, c)

  def tap(yy, xx):
    index = jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)
    return jnp.take_along_axis(flat, index[..., None], axis=1).astype(jnp.float32)

  top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
  bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
  out = top * (1 - fy) + bottom * fy
  out = jnp.where(inside[..., None], out, fill[:, None, :].astype(jnp.float32))
  return out.reshape(b, h, w, c)


def adjust_brightness(images: jax.Array, delta: jax.Array) -> jax.Array:
  """Adds `delta` (B,) on the 0..255 scale, clipped."""
  return jnp.clip(images + delta[:, None, None, None], 0.0, 255.0)


def adjust_contrast(images: jax.Array, factor: jax.Array) -> jax.Array:
  """Scales each image's distance from its own mean by `factor` (B,), clipped."""
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  return jnp.clip(mean + (images - mean) * factor[:, None, None, None], 0.0, 255.0)


def gaussian_blur(images: jax.Array, sigma: jax.Array, radius: int) -> jax.Array:
  """Separable Gaussian blur with per-image `sigma` (B,) pixels, kernel taps -radius..radius.

  Edges repeat the border pixel. A sigma of 0 leaves the image unchanged.
  """
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  safe = jnp.maximum(sigma, 1e-3)[:, None]
  weights = jnp.exp(-0.5 * (taps[None, :] / safe) ** 2)
  weights = jnp.where(sigma[:, None] > 0, weights, (taps[None, :] == 0).astype(jnp.float32))
  weights = weights / weights.sum(axis=1, keepdims=True)  # (B, 2R + 1)

  def along(x, axis):
    size = x.shape[axis]
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    padded = jnp.pad(x, pad, mode="edge")
    out = jnp.zeros_like(x)
    for k in range(2 * radius + 1):
      piece = jax.lax.slice_in_dim(padded, k, k + size, axis=axis)
      out = out + piece * weights[:, k][:, None, None, None]
    return out

  return along(along(images, 1), 2)


# ---------------------------------------------------------------------------------------------
# Random ops. Each draws its strength per example uniformly in [-max, max] (or [0, max]), is the
# identity at zero strength, and acts on an example with probability `p` (drawn every time, so the
# random stream does not depend on the outcome).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Op:
  """An augmentation op; subclasses are frozen dataclasses, so an `Augmentation` is hashable."""
  p: float
  bounds = (0.0, 0.0)  # The range of the op's one strength argument (its other field).

  @classmethod
  def strength_field(cls) -> str:
    return next(f.name for f in dataclasses.fields(cls) if f.name != "p")

  def __post_init__(self):
    _check_range(f"{self.name} p", self.p, 0.0, 1.0)
    field = self.strength_field()
    _check_range(f"{self.name} {field}", getattr(self, field), *self.bounds)

  @property
  def name(self) -> str:
    return type(self).__name__.lower()

  # Uniform draws in [0, 1) each example needs besides its gate. All ops of an `Augmentation` take
  # theirs from one call of the random generator: each call is a kernel that XLA compiles slowly.
  num_draws = 1

  def _gate(self, draws: jax.Array) -> jax.Array:
    return draws[:, 0] < self.p


class GeometricOp(Op):
  """An op that moves pixels: gives (B, 3, 3) output-to-input maps."""

  def maps(self, draws: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """(B, 3, 3) maps from `draws` (B, 1 + num_draws) uniform in [0, 1)."""
    maps = self._maps(draws[:, 1:], hw)
    return jnp.where(self._gate(draws)[:, None, None], maps, jnp.eye(3, dtype=jnp.float32))

  def _maps(self, draws, hw):
    raise NotImplementedError


class ValueOp(Op):
  """An op that changes values in place: a float32 batch in, the same shape out."""

  def __call__(self, inputs: jax.Array, draws: jax.Array, key: jax.Array) -> jax.Array:
    """`draws` (B, 1 + num_draws) uniform in [0, 1); `key` for ops that need more randomness."""
    out = self._apply(inputs, draws[:, 1:], key)
    gate = self._gate(draws).reshape((-1,) + (1,) * (inputs.ndim - 1))
    return jnp.where(gate, out, inputs)

  def _apply(self, inputs, draws, key):
    raise NotImplementedError


class PhotometricOp(ValueOp):
  """A value op on page images: (B, H, W, C) float32 on 0..255 in, the same out."""


def _between(draws, low, high):
  """Uniform [0, 1) draws stretched to [low, high)."""
  return low + (high - low) * draws


@register("rotate")
@dataclasses.dataclass(frozen=True)
class Rotate(GeometricOp):
  """Rotates about the centre by an angle uniform in [-max_degrees, max_degrees]."""
  max_degrees: float = 0.0
  bounds = (0.0, MAX_ROTATION_DEGREES)  # Of max_degrees.

  def _maps(self, draws, hw):
    return rotation_map(_between(draws[:, 0], -self.max_degrees, self.max_degrees), hw)


@register("scale")
@dataclasses.dataclass(frozen=True)
class Scale(GeometricOp):
  """Zooms about the centre by a factor uniform in [1 - max_fraction, 1 + max_fraction].

  The output keeps its size: zooming in crops the edges, zooming out shows paper around the page.
  """
  max_fraction: float = 0.0
  bounds = (0.0, 0.5)  # Of max_fraction.

  def _maps(self, draws, hw):
    return scale_map(1.0 + _between(draws[:, 0], -self.max_fraction, self.max_fraction), hw)


@register("translate")
@dataclasses.dataclass(frozen=True)
class Translate(GeometricOp):
  """Shifts by up to `max_fraction` of the width and of the height, independently."""
  max_fraction: float = 0.0
  bounds = (0.0, 0.5)  # Of max_fraction.

  num_draws = 2

  def _maps(self, draws, hw):
    h, w = hw
    shift = _between(draws, -self.max_fraction, self.max_fraction)
    return translation_map(shift[:, 0] * w, shift[:, 1] * h)


@register("shift")
@dataclasses.dataclass(frozen=True)
class Shift(GeometricOp):
  """Shifts by a whole number of pixels, uniform in [-max_pixels, max_pixels] in each direction.

  Alone (or with photometric ops only) it moves the page without resampling it: every pixel keeps
  its value, so a 1-2 px trace stays black, where `translate`'s fractional shifts (and `rotate`,
  `scale`) interpolate it into a grey band. Next to other geometric ops it joins their one map.
  """
  max_pixels: int = 0
  bounds = (0, 64)  # Of max_pixels.

  num_draws = 2

  def _maps(self, draws, hw):
    span = 2 * self.max_pixels + 1
    shift = jnp.minimum(jnp.floor(draws * span), span - 1) - self.max_pixels
    return translation_map(shift[:, 0], shift[:, 1])


@register("perspective")
@dataclasses.dataclass(frozen=True)
class Perspective(GeometricOp):
  """A photograph taken off-axis: each corner moves by up to `max_fraction` of the side."""
  max_fraction: float = 0.0
  bounds = (0.0, 0.25)  # Of max_fraction.

  num_draws = 8

  def _maps(self, draws, hw):
    h, w = hw
    moves = _between(draws.reshape(-1, 4, 2), -self.max_fraction,
                     self.max_fraction) * jnp.array([w, h], jnp.float32)
    return perspective_map(moves, hw)


@register("brightness")
@dataclasses.dataclass(frozen=True)
class Brightness(PhotometricOp):
  """Adds a uniform offset in [-max_delta, max_delta] (a fraction of the range 0..255)."""
  max_delta: float = 0.0
  bounds = (0.0, 1.0)  # Of max_delta.

  def _apply(self, images, draws, key):
    delta = _between(draws[:, 0], -self.max_delta, self.max_delta) * 255.0
    return adjust_brightness(images, delta)


@register("contrast")
@dataclasses.dataclass(frozen=True)
class Contrast(PhotometricOp):
  """Scales the distance from the image mean by a factor in [1 - max_delta, 1 + max_delta]."""
  max_delta: float = 0.0
  bounds = (0.0, 1.0)  # Of max_delta.

  def _apply(self, images, draws, key):
    factor = 1.0 + _between(draws[:, 0], -self.max_delta, self.max_delta)
    return adjust_contrast(images, factor)


@register("blur")
@dataclasses.dataclass(frozen=True)
class Blur(PhotometricOp):
  """Gaussian blur (out of focus) with sigma uniform in [0, max_sigma] pixels."""
  max_sigma: float = 0.0
  bounds = (0.0, 10.0)  # Of max_sigma.

  def _apply(self, images, draws, key):
    sigma = _between(draws[:, 0], 0.0, self.max_sigma)
    return gaussian_blur(images, sigma, radius=max(1, math.ceil(3 * self.max_sigma)))


@register("noise")
@dataclasses.dataclass(frozen=True)
class Noise(PhotometricOp):
  """Additive Gaussian sensor noise, standard deviation uniform in [0, max_std] (0..255 scale)."""
  max_std: float = 0.0
  bounds = (0.0, 64.0)  # Of max_std.

  def _apply(self, images, draws, key):
    std = _between(draws[:, 0], 0.0, self.max_std)
    noise = jax.random.normal(key, images.shape, jnp.float32)
    return jnp.clip(images + noise * std[:, None, None, None], 0.0, 255.0)


class SignalOp(ValueOp):
  """A value op on digitized leads: (B, T, C) float32 in mV in, the same out
  (`data.input='signals'`)."""


@register("amplitude")
@dataclasses.dataclass(frozen=True)
class Amplitude(SignalOp):
  """Every lead scaled by one factor uniform in [1 - max_fraction, 1 + max_fraction]: the page's
  gain (the print and scan scale, the digitizer's reading of the 1 mV pulse)."""
  max_fraction: float = 0.0
  bounds = (0.0, 0.9)  # Of max_fraction.

  def _apply(self, signals, draws, key):
    return signals * (1.0 + _between(draws[:, 0], -self.max_fraction, self.max_fraction))[
        :, None, None]


@register("lead_amplitude")
@dataclasses.dataclass(frozen=True)
class LeadAmplitude(SignalOp):
  """Each channel scaled by its own factor uniform in [1 - max_fraction, 1 + max_fraction]."""
  max_fraction: float = 0.0
  bounds = (0.0, 0.9)  # Of max_fraction.

  def _apply(self, signals, draws, key):
    factor = 1.0 + _between(jax.random.uniform(key, (signals.shape[0], signals.shape[2])),
                            -self.max_fraction, self.max_fraction)
    return signals * factor[:, None, :]


@register("time_shift")
@dataclasses.dataclass(frozen=True)
class TimeShift(SignalOp):
  """All channels moved together in time by up to `max_fraction` of the record (whole samples),
  zeros shifted in: the digitizer's time origin, off by a little."""
  max_fraction: float = 0.0
  bounds = (0.0, 0.25)  # Of max_fraction.

  def _apply(self, signals, draws, key):
    n = signals.shape[1]
    shift = jnp.round(_between(draws[:, 0], -self.max_fraction, self.max_fraction) * n)
    source = jnp.arange(n)[None, :] - shift[:, None].astype(jnp.int32)  # (B, T)
    inside = (source >= 0) & (source < n)
    taken = jnp.take_along_axis(signals, jnp.clip(source, 0, n - 1)[:, :, None], axis=1)
    return jnp.where(inside[:, :, None], taken, 0.0)


@register("signal_noise")
@dataclasses.dataclass(frozen=True)
class SignalNoise(SignalOp):
  """Gaussian noise of standard deviation uniform in [0, max_mv] mV on the shown samples only (a
  lead's zeros outside its window stay zero): the digitizer's error around the trace."""
  max_mv: float = 0.0
  bounds = (0.0, 1.0)  # Of max_mv.

  def _apply(self, signals, draws, key):
    std = _between(draws[:, 0], 0.0, self.max_mv)[:, None, None]
    noise = jax.random.normal(key, signals.shape, jnp.float32) * std
    return signals + jnp.where(signals != 0, noise, 0.0)


@register("drop_leads")
@dataclasses.dataclass(frozen=True)
class DropLeads(SignalOp):
  """Each of the twelve leads (not the rhythm strip, the last channel) set to 0 with probability
  `rate`: a lead the digitizer could not read."""
  rate: float = 0.0
  bounds = (0.0, 1.0)  # Of rate.

  def _apply(self, signals, draws, key):
    drop = jax.random.uniform(key, (signals.shape[0], signals.shape[2])) < self.rate
    drop = drop.at[:, -1].set(False)
    return jnp.where(drop[:, None, :], 0.0, signals)


# Defaults of `p` per op, as a spec leaves it out: blur acts on half the pages, the rest on all.
_DEFAULT_P = {"blur": 0.5}


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """A parsed spec: ops applied in order, consecutive geometric ops resampled once."""
  ops: tuple[Op, ...] = ()

  def __bool__(self) -> bool:
    return bool(self.ops)

  @property
  def on_signals(self) -> bool:
    """Whether the ops act on digitized leads (signal ops) rather than on page images."""
    return bool(self.ops) and isinstance(self.ops[0], SignalOp)

  def apply(self, images: jax.Array, key: jax.Array) -> jax.Array:
    """Augments a (B, H, W, C) batch (uint8 or float on 0..255), returning float32 on 0..255, or
    with signal ops a (B, T, C) batch of leads in mV, returning float32 mV."""
    out = images.astype(jnp.float32)
    if self.on_signals != (images.ndim == 3):
      raise ValueError(f"Augmentation ops {[op.name for op in self.ops]} act on "
                       f"{'signals (B, T, C)' if self.on_signals else 'page images (B, H, W, C)'}"
                       f", not on inputs of shape {images.shape}.")
    hw = images.shape[1:3]
    batch = images.shape[0]
    widths = [1 + op.num_draws for op in self.ops]
    all_draws = jax.random.uniform(jax.random.fold_in(key, 0), (batch, sum(widths)))
    starts = np.cumsum([0] + widths)
    pending = None  # The product of consecutive geometric maps not yet applied.
    for index, op in enumerate(self.ops):
      draws = all_draws[:, starts[index]:starts[index + 1]]
      if isinstance(op, GeometricOp):
        maps = op.maps(draws, hw)
        pending = maps if pending is None else pending @ maps
        continue
      if pending is not None:
        out, pending = warp(out, pending, paper_colour(out)), None
      out = op(out, draws, jax.random.fold_in(key, 1 + index))
    if pending is not None:
      out = warp(out, pending, paper_colour(out))
    return out


def parse(spec: str | None) -> Augmentation:
  """Builds the `Augmentation` of `spec` ("name(args)|name|..."); "" or "none" gives none."""
  context = f"config.data.augment={spec!r}"
  ops = []
  for name, args, kwargs in transforms.parse_calls(spec, _REGISTRY, context):
    cls = _REGISTRY[name]
    if len(args) > 2 or (len(args) == 2 and "p" in kwargs):
      raise ValueError(f"{context}: {name} takes ({cls.strength_field()}, p=...).")
    kwargs.setdefault("p", args[1] if len(args) == 2 else _DEFAULT_P.get(name, 1.0))
    if args:
      kwargs[cls.strength_field()] = args[0]
    try:
      ops.append(cls(**kwargs))
    except (TypeError, ValueError) as e:
      raise ValueError(f"{context}: {e}") from e
  if len({isinstance(op, SignalOp) for op in ops}) > 1:
    raise ValueError(f"{context}: mixes page ops and signal ops "
                     f"({', '.join(op.name for op in ops if isinstance(op, SignalOp))}); a run "
                     "augments either its page images or its digitized leads.")
  return Augmentation(tuple(ops))
