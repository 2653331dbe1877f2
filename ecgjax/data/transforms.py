"""Small named host image ops (resize, grid removal, grayscale), chained by a big_vision-style spec string.

A spec such as ``"resize(256, 448, mode='pad')|grayscale"`` names ops registered here with
`register`; each op is built from its arguments into a function ``op(image, rng) -> image`` on a
uint8 HWC numpy array. They turn a decoded page into the model's input once per run
(`pipeline.Preprocess`, `decoded.load`), and on the host for prediction and saliency.

Not here: training augmentation, which runs on the device inside the train step (`augment`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
from PIL import Image

Op = Callable[[np.ndarray, np.random.Generator], np.ndarray]

class Registry(dict):
  """Named factories for the ops of a spec; `augment` keeps its own registry of the same kind."""

  def __init__(self, kind: str):
    super().__init__()
    self.kind = kind

  def register(self, name: str):
    """A decorator registering a factory under `name`: ``factory(*args, **kwargs) -> op``."""

    def decorator(factory):
      if name in self:
        raise ValueError(f"{self.kind} {name!r} is registered twice.")
      self[name] = factory
      return factory

    return decorator

  def available(self) -> tuple[str, ...]:
    return tuple(sorted(self))


_REGISTRY = Registry("Transform")
register = _REGISTRY.register
available = _REGISTRY.available


_OP_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)


def parse_calls(spec: str, known: Collection[str], context: str
                ) -> list[tuple[str, list[Any], dict[str, Any]]]:
  """Splits a spec "name(args)|name|..." into (name, args, kwargs); "" or "none" gives none.

  Arguments are Python literals. Errors start with `context` (what the spec configures) and name the
  part at fault; a name not in `known` is an error listing them.
  """
  spec = (spec or "").strip()
  if spec.lower() in ("", "none"):
    return []
  calls = []
  for part in spec.split("|"):
    match = _OP_RE.match(part)
    if not match:
      raise ValueError(f"{context}: cannot parse {part!r}; expected name(args).")
    name, arg_text = match.group(1), match.group(2)
    if name not in known:
      raise ValueError(f"{context}: unknown op {name!r}; available: {', '.join(sorted(known))}.")
    try:
      call = ast.parse(f"f({arg_text or ''})", mode="eval").body
      args = [ast.literal_eval(a) for a in call.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError) as e:
      raise ValueError(f"{context}: bad arguments for {name!r}: {e}") from e
    calls.append((name, args, kwargs))
  return calls


def parse(spec: str) -> list[Op]:
  """Builds the ops of `spec` ("name(args)|name|..."); "" or "none" gives no ops."""
  context = f"Transform spec {spec!r}"
  ops = []
  for name, args, kwargs in parse_calls(spec, _REGISTRY, context):
    try:
      ops.append(_REGISTRY[name](*args, **kwargs))
    except TypeError as e:
      raise ValueError(f"{context}: bad arguments for {name!r}: {e}") from e
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


RESIZE_METHODS = ("bilinear", "min_pool")


def min_pool(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Shrinks a uint8 HWC image to (height, width), each output pixel the darkest of its block.

  The source rows (columns) are dealt into `height` (`width`) contiguous blocks of 1-2+ pixels, as
  `floor(i * source / target)` starts them, and each channel takes its minimum over a block: a 1-2 px
  dark trace stays as dark and at least 1 px wide however far the page is shrunk, where a bilinear
  or area resize averages it with the paper into grey. Needs target <= source on both axes.
  """
  h, w = image.shape[:2]
  if height > h or width > w:
    raise ValueError(f"min_pool shrinks: {h}x{w} cannot become {height}x{width}.")
  rows = np.floor(np.arange(height) * (h / height)).astype(np.intp)
  cols = np.floor(np.arange(width) * (w / width)).astype(np.intp)
  out = np.minimum.reduceat(image, rows, axis=0)
  return np.minimum.reduceat(out, cols, axis=1)


@register("resize")
def resize(height: int, width: int, mode: str = "pad", fill: int = 255,
           method: str = "bilinear") -> Op:
  """Resizes to (height, width).

  mode="pad" keeps the aspect ratio and pads with `fill` (white paper) to the target, centred;
  mode="stretch" scales each axis independently. method="bilinear" (PIL, antialiased when
  shrinking) or "min_pool" (`min_pool`: keeps a thin dark trace dark when shrinking; an axis that
  grows is resized bilinearly first).
  """
  if mode not in ("pad", "stretch"):
    raise ValueError(f"resize mode must be 'pad' or 'stretch', got {mode!r}.")
  if method not in RESIZE_METHODS:
    raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}.")

  def op(image, rng):
    del rng
    h, w = image.shape[:2]
    if (h, w) == (height, width):
      return image
    top, left, nh, nw = fit_box((h, w), (height, width), mode)
    if method == "min_pool":
      if nh > h or nw > w:  # Growing an axis: bilinear up to at least the target, then pool.
        image = _bilinear(image, max(h, nh), max(w, nw))
      resized = min_pool(image, nh, nw)
    else:
      resized = _bilinear(image, nh, nw)
    if (nh, nw) == (height, width):
      return resized.reshape(height, width, -1)
    out = np.full((height, width) + resized.shape[2:], fill, dtype=np.uint8)
    out[top:top + nh, left:left + nw] = resized
    return out.reshape(height, width, -1)

  return op


def _bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
  if image.shape[:2] == (height, width):
    return image
  pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
  return np.asarray(pil.resize((width, height), Image.BILINEAR, reducing_gap=2.0)).reshape(
      height, width, -1)


LEAD_CHANNELS = 16  # Twelve leads and the rhythm strip's four 2.5 s quarters (`leads`).


def lead_crops() -> list[tuple[float, float, float, float]]:
  """The `leads` op's boxes, fractions (left, top, right, bottom) of the grid panel, in its order:
  `layout.LEADS`, then the rhythm strip's four 2.5 s quarters."""
  from ecgjax.data import layout  # pylint: disable=g-import-not-at-top
  boxes = layout.lead_boxes()
  crops = [boxes[lead] for lead in layout.LEADS]
  x0, y0, x1, y1 = boxes[layout.RHYTHM]
  quarter = (x1 - x0) / 4
  return crops + [(x0 + i * quarter, y0, x0 + (i + 1) * quarter, y1) for i in range(4)]


@register("leads")
def leads(height: int, width: int, method: str = "min_pool") -> Op:
  """The grid panel cut along its known layout into one (height, width) image per lead, stacked as
  channels: lead k of `layout.LEADS` in channels [k C, (k + 1) C), then the rhythm strip's four
  2.5 s quarters (C: the input's channels; `LEAD_CHANNELS` x C in all).

  A model then sees which lead each trace is (the channel), where a whole-panel CNN's global
  pooling forgets where on the page a wave was; and each lead keeps the panel's resolution (a
  2.5 s box of a 640 px panel is about 150 x 80 px). Boxes are `layout.lead_boxes`: each row's band
  reaches halfway to its neighbours, so a tall wave of the next row can reach in. Each box is
  stretched to (height, width) by `method`, as `resize` does.
  """
  crops = lead_crops()
  resize_box = resize(height, width, mode="stretch", method=method)

  def op(image, rng):
    h, w = image.shape[:2]
    out = []
    for x0, y0, x1, y1 in crops:
      top, left = min(int(round(y0 * h)), h - 1), min(int(round(x0 * w)), w - 1)
      bottom, right = max(int(round(y1 * h)), top + 1), max(int(round(x1 * w)), left + 1)
      out.append(resize_box(image[top:bottom, left:right], rng))
    return np.concatenate(out, axis=-1)

  return op


@register("remove_grid")
def remove_grid(ink: float = 60.0, paper: float = 175.0) -> Op:
  """The printed grid removed by colour: a clean trace on white, from the page's luminance.

  The trace is near-black; the grid's dots and lines are lighter (grey, pink or red: their
  luminance is well above the trace's) and the paper white. Luminance at or below `ink` becomes
  black, at or above `paper` white, linearly in between (the trace's antialiased edge). Run before
  any downscale. Keeps the channel count (grey values in every channel).

  The defaults suit panels stored 640-1280 px wide (`ecg_images/w640`, `w1024`, the dev pages),
  where the release's 1 px grid dots have luminance 180-240 and the trace's core below 60. On
  full-resolution scans (`ecg_images/full`, ~2100 px) the dots are still 80-180: use
  `remove_grid(ink=30, paper=70)` there.
  """
  if not 0 <= ink < paper <= 255:
    raise ValueError(f"remove_grid needs 0 <= ink < paper <= 255, got ink={ink}, paper={paper}.")
  lut = (np.clip((np.arange(256, dtype=np.float32) - ink) / (paper - ink), 0, 1) * 255
         ).round().astype(np.uint8)

  def op(image, rng):
    del rng
    if image.shape[-1] == 1:
      return lut[image]
    luminance = np.asarray(Image.fromarray(image).convert("L"))
    return np.repeat(lut[luminance][..., None], image.shape[-1], axis=-1)

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
