"""Small named host image ops (resize, grayscale), chained by a big_vision-style spec string.

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
