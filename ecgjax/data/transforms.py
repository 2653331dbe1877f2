"""Small named image ops, chained by a big_vision-style spec string from the config.

A spec such as ``"rotate(2)|scale(0.05)|brightness(0.2)"`` names ops registered here with
`register`; each op is built from its arguments into a function ``op(image, rng) -> image`` on a
uint8 HWC numpy array, with `rng` a `numpy.random.Generator` (deterministic ops ignore it). Ops run
in grain worker processes on host memory, never inside jit.

Augmentation ops respect what an ECG page is: there is deliberately no horizontal flip (it reverses
time) and no vertical flip (it inverts voltage).
"""

from __future__ import annotations

import ast
import io
import re
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

Op = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_REGISTRY: dict[str, Callable[..., Op]] = {}


def register(name: str):
  """Registers an op factory under `name`: ``factory(*args, **kwargs) -> Op``."""

  def decorator(factory):
    if name in _REGISTRY:
      raise ValueError(f"Transform {name!r} is registered twice.")
    _REGISTRY[name] = factory
    return factory

  return decorator


def available() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


_OP_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)


def parse(spec: str) -> list[Op]:
  """Builds the ops of `spec` ("name(args)|name|..."); "" or "none" gives no ops."""
  spec = (spec or "").strip()
  if spec.lower() in ("", "none"):
    return []
  ops = []
  for part in spec.split("|"):
    match = _OP_RE.match(part)
    if not match:
      raise ValueError(f"Cannot parse transform {part!r} in spec {spec!r}; expected name(args).")
    name, arg_text = match.group(1), match.group(2)
    if name not in _REGISTRY:
      raise ValueError(
          f"Unknown transform {name!r} in spec {spec!r}; available: {', '.join(available())}.")
    try:
      call = ast.parse(f"f({arg_text or ''})", mode="eval").body
      args = [ast.literal_eval(a) for a in call.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError) as e:
      raise ValueError(f"Bad arguments for transform {name!r} in spec {spec!r}: {e}") from e
    try:
      ops.append(_REGISTRY[name](*args, **kwargs))
    except TypeError as e:
      raise ValueError(f"Bad arguments for transform {name!r} in spec {spec!r}: {e}") from e
  return ops


def apply(ops: list[Op], image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  for op in ops:
    image = op(image, rng)
  return image


# ---------------------------------------------------------------------------------------------
# Deterministic ops: geometry and colour of the model input.
# ---------------------------------------------------------------------------------------------


def fit_box(source_hw: tuple[int, int], target_hw: tuple[int, int],
            mode: str = "pad") -> tuple[int, int, int, int]:
  """Where `resize` puts a source image inside the target: (top, left, height, width) in pixels.

  mode="pad" scales to fit and centres (the rest is padding); "stretch" fills the target.
  """
  if mode not in ("pad", "stretch"):
    raise ValueError(f"resize mode must be 'pad' or 'stretch', got {mode!r}.")
  (h, w), (height, width) = source_hw, target_hw
  if mode == "stretch" or (h, w) == (height, width):
    return 0, 0, height, width
  scale = min(height / h, width / w)
  nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
  return (height - nh) // 2, (width - nw) // 2, nh, nw


@register("resize")
def resize(height: int, width: int, mode: str = "pad", fill: int = 255) -> Op:
  """Resizes to (height, width).

  mode="pad" keeps the aspect ratio and pads with `fill` (white paper) to the target, centred;
  mode="stretch" scales each axis independently.
  """
  if mode not in ("pad", "stretch"):
    raise ValueError(f"resize mode must be 'pad' or 'stretch', got {mode!r}.")

  def op(image, rng):
    del rng
    h, w = image.shape[:2]
    if (h, w) == (height, width):
      return image
    pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    top, left, nh, nw = fit_box((h, w), (height, width), mode)
    resized = np.asarray(pil.resize((nw, nh), Image.BILINEAR, reducing_gap=2.0))
    if (nh, nw) == (height, width):
      return resized.reshape(height, width, -1)
    out = np.full((height, width) + resized.shape[2:], fill, dtype=np.uint8)
    out[top:top + nh, left:left + nw] = resized
    return out.reshape(height, width, -1)

  return op


@register("grayscale")
def grayscale() -> Op:
  """RGB to one luminance channel (ITU-R 601-2, as PIL's "L")."""

  def op(image, rng):
    del rng
    if image.shape[-1] == 1:
      return image
    return np.asarray(Image.fromarray(image).convert("L"))[..., None]

  return op


# ---------------------------------------------------------------------------------------------
# Random augmentation ops for training. Each draws its strength from `rng` uniformly in
# [-max, max] (or [0, max]), is the identity at zero strength, and fills any exposed border with
# the paper colour seen at the image's edge, never black: a black band is a cue no real page has.
# `p` is the probability that the op acts on an example at all.
# ---------------------------------------------------------------------------------------------

# A page is photographed a little askew, never sideways: larger angles make leads cross rows.
MAX_ROTATION_DEGREES = 10.0


def _check_range(name: str, value: float, low: float, high: float) -> None:
  if not low <= value <= high:
    raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}.")


def _to_pil(image: np.ndarray) -> Image.Image:
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"Transforms expect uint8 HxWx1 or HxWx3 images, got {image.dtype} "
                     f"{image.shape}.")
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(pil: Image.Image, channels: int) -> np.ndarray:
  out = np.asarray(pil)
  return out[..., None] if channels == 1 else out


def _paper_fill(image: np.ndarray) -> int | tuple[int, ...]:
  """The median colour of the image's outermost two pixels, as a PIL fill value."""
  ring = np.concatenate([image[:2].reshape(-1, image.shape[-1]),
                         image[-2:].reshape(-1, image.shape[-1]),
                         image[:, :2].reshape(-1, image.shape[-1]),
                         image[:, -2:].reshape(-1, image.shape[-1])])
  fill = tuple(int(v) for v in np.median(ring, axis=0))
  return fill[0] if len(fill) == 1 else fill


def _maybe(p: float, op: Op) -> Op:
  _check_range("p", p, 0.0, 1.0)
  if p >= 1.0:
    return op

  def maybe_op(image, rng):
    # Always draw, so the random stream (and thus later ops) does not depend on this outcome.
    if rng.uniform() < p:
      return op(image, rng)
    return image

  return maybe_op


def _affine(image: np.ndarray, inverse: np.ndarray) -> np.ndarray:
  """Resamples `image` by the 2x3 matrix mapping output (x, y) to input (x, y)."""
  pil = _to_pil(image)
  out = pil.transform(pil.size, Image.Transform.AFFINE, tuple(inverse.ravel()),
                      resample=Image.Resampling.BILINEAR, fillcolor=_paper_fill(image))
  return _from_pil(out, image.shape[-1])


def _about_centre(image: np.ndarray, linear: np.ndarray, shift=(0.0, 0.0)) -> np.ndarray:
  """The inverse affine map of `linear` about the image centre followed by `shift` (x, y)."""
  h, w = image.shape[:2]
  centre = np.array([(w - 1) / 2, (h - 1) / 2])
  inv = np.linalg.inv(linear)
  # output p = A (q - c) + c + t  =>  q = A^-1 (p - c - t) + c
  offset = centre - inv @ (centre + np.asarray(shift))
  return np.concatenate([inv, offset[:, None]], axis=1)


@register("rotate")
def rotate(max_degrees: float, p: float = 1.0) -> Op:
  """Rotates about the centre by an angle uniform in [-max_degrees, max_degrees].

  Positive angles turn the page anticlockwise as displayed. Capped at MAX_ROTATION_DEGREES.
  """
  _check_range("rotate max_degrees", max_degrees, 0.0, MAX_ROTATION_DEGREES)

  def op(image, rng):
    angle = rng.uniform(-max_degrees, max_degrees)
    if angle == 0.0:
      return image
    t = np.deg2rad(angle)
    # Image rows grow downwards, so an anticlockwise turn on screen has this sign pattern.
    linear = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    return _affine(image, _about_centre(image, linear))

  return _maybe(p, op)


@register("scale")
def scale(max_fraction: float, p: float = 1.0) -> Op:
  """Zooms about the centre by a factor uniform in [1 - max_fraction, 1 + max_fraction].

  The output keeps its size: zooming in crops the edges, zooming out shows paper around the page.
  """
  _check_range("scale max_fraction", max_fraction, 0.0, 0.5)

  def op(image, rng):
    factor = 1.0 + rng.uniform(-max_fraction, max_fraction)
    if factor == 1.0:
      return image
    return _affine(image, _about_centre(image, np.eye(2) * factor))

  return _maybe(p, op)


@register("translate")
def translate(max_fraction: float, p: float = 1.0) -> Op:
  """Shifts by up to `max_fraction` of the width and of the height, independently."""
  _check_range("translate max_fraction", max_fraction, 0.0, 0.5)

  def op(image, rng):
    h, w = image.shape[:2]
    dx, dy = rng.uniform(-max_fraction, max_fraction, size=2) * (w, h)
    if dx == 0.0 and dy == 0.0:
      return image
    return _affine(image, _about_centre(image, np.eye(2), shift=(dx, dy)))

  return _maybe(p, op)


@register("perspective")
def perspective(max_fraction: float, p: float = 1.0) -> Op:
  """A photograph taken off-axis: each corner moves by up to `max_fraction` of the side."""
  _check_range("perspective max_fraction", max_fraction, 0.0, 0.25)

  def op(image, rng):
    h, w = image.shape[:2]
    moves = rng.uniform(-max_fraction, max_fraction, size=(4, 2)) * (w, h)
    if not moves.any():
      return image
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    # PIL wants the map from output to input: solve the 8 coefficients from the moved corners.
    rows, rhs = [], []
    for (x, y), (u, v) in zip(corners + moves, corners):
      rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
      rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
      rhs.extend([u, v])
    coeffs = np.linalg.solve(np.array(rows), np.array(rhs))
    pil = _to_pil(image)
    out = pil.transform(pil.size, Image.Transform.PERSPECTIVE, tuple(coeffs),
                        resample=Image.Resampling.BILINEAR, fillcolor=_paper_fill(image))
    return _from_pil(out, image.shape[-1])

  return _maybe(p, op)


@register("brightness")
def brightness(max_delta: float, p: float = 1.0) -> Op:
  """Adds a uniform offset in [-max_delta, max_delta] (a fraction of the range 0..255)."""
  _check_range("brightness max_delta", max_delta, 0.0, 1.0)

  def op(image, rng):
    delta = rng.uniform(-max_delta, max_delta) * 255.0
    if delta == 0.0:
      return image
    return np.clip(image.astype(np.float32) + delta, 0, 255).round().astype(np.uint8)

  return _maybe(p, op)


@register("contrast")
def contrast(max_delta: float, p: float = 1.0) -> Op:
  """Scales the distance from the image mean by a factor in [1 - max_delta, 1 + max_delta]."""
  _check_range("contrast max_delta", max_delta, 0.0, 1.0)

  def op(image, rng):
    factor = 1.0 + rng.uniform(-max_delta, max_delta)
    if factor == 1.0:
      return image
    x = image.astype(np.float32)
    mean = x.mean()
    return np.clip(mean + (x - mean) * factor, 0, 255).round().astype(np.uint8)

  return _maybe(p, op)


@register("blur")
def blur(max_sigma: float, p: float = 0.5) -> Op:
  """Gaussian blur (out of focus, motion-free) with sigma uniform in [0, max_sigma] pixels."""
  _check_range("blur max_sigma", max_sigma, 0.0, 10.0)

  def op(image, rng):
    sigma = rng.uniform(0.0, max_sigma)
    if sigma == 0.0:
      return image
    return _from_pil(_to_pil(image).filter(ImageFilter.GaussianBlur(sigma)), image.shape[-1])

  return _maybe(p, op)


@register("noise")
def noise(max_std: float, p: float = 1.0) -> Op:
  """Additive Gaussian sensor noise, standard deviation uniform in [0, max_std] (0..255 scale)."""
  _check_range("noise max_std", max_std, 0.0, 64.0)

  def op(image, rng):
    std = rng.uniform(0.0, max_std)
    if std == 0.0:
      return image
    noisy = image.astype(np.float32) + rng.normal(0.0, std, size=image.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)

  return _maybe(p, op)


@register("jpeg")
def jpeg(min_quality: int, max_quality: int = 95, p: float = 1.0) -> Op:
  """Re-encodes as JPEG at a quality drawn uniformly from [min_quality, max_quality]."""
  _check_range("jpeg min_quality", min_quality, 1, 100)
  _check_range("jpeg max_quality", max_quality, min_quality, 100)

  def op(image, rng):
    quality = int(rng.integers(min_quality, max_quality, endpoint=True))
    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
      return _from_pil(decoded.convert("L" if image.shape[-1] == 1 else "RGB"), image.shape[-1])

  return _maybe(p, op)
