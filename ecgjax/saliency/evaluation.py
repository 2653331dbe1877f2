"""Is a saliency map right? Territory localisation, the randomisation sanity check, deletion curves.

Three questions, each answered by numbers rather than by looking at a map:

- **Does the map point at the leads that carry the disease?** `territory_localisation`: the share of
  a map's mass on the leads of a known MI territory (synthetic pages know it:
  `synth.simulate(...).params["territory"]` and `synth.TERRITORY_LEADS`) against the share of the
  image those leads' boxes cover (chance), and whether the map's top three leads are mostly
  territory leads.
- **Does the map depend on the model at all?** The model-parameter randomisation test of Adebayo
  et al. ("Sanity checks for saliency maps", NeurIPS 2018): `cascading_randomisation` re-initialises
  the model's layers from the top (logits) down, one more at each step, and `rank_correlation`
  compares each map with the trained model's. A method whose maps survive the randomisation of
  every layer explains the image, not the model.
- **Are the most-attributed regions the ones the prediction needs?** `perturbation_curves`:
  deletion (paper-white fill over the most-attributed segments first: the class probability should
  fall fast) and insertion (reveal them first on a blank page: it should rise fast), with `auc`,
  over patches (`patch_segments`) or lead boxes (`lead_segments`), against any other ordering
  (random, or darkest-first: `ink_order`).

Plain numpy, one page at a time, except the model evaluations, which are batched and jitted.
`experiments/explain_eval.py` runs all three over synthetic and real pages and prints the tables.

Not here: computing attributions (`attribution`), per-lead read-outs of one map (`leads`), or figures.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ecgjax.data import layout as layout_lib
from ecgjax.saliency.attribution import LogitFn, layers
from ecgjax.saliency.leads import ink, lead_pixel_boxes, lead_sums

# ---------------------------------------------------------------------------------------------
# Territory localisation.
# ---------------------------------------------------------------------------------------------


def top3_chance(num_territory_leads: int, num_leads: int = len(layout_lib.LEADS)) -> float:
  """P(at least 2 of 3 leads drawn at random from `num_leads` are territory leads)."""
  k, n = num_territory_leads, num_leads
  return (math.comb(k, 2) * math.comb(n - k, 1) + math.comb(k, 3)) / math.comb(n, 3)


def territory_localisation(heat: np.ndarray, box: tuple[int, int, int, int],
                           territory_leads: Sequence[str], rhythm_lead: str | None = None,
                           lead_boxes: Mapping[str, tuple[float, float, float, float]] | None = None,
                           page_ink: np.ndarray | None = None) -> dict[str, Any]:
  """How much of one map falls on the leads of a known territory.

  Args:
    heat: (H, W) non-negative attribution mass (`leads.heat_map`).
    box: where the panel lies in the map (`leads.content_box`).
    territory_leads: the leads that look at the territory, e.g. `synth.TERRITORY_LEADS["inferior"]`.
    rhythm_lead: the lead the rhythm strip shows; the strip counts as territory when it is one.
    lead_boxes: fractional lead boxes of the panel; default `layout.lead_boxes()`.
    page_ink: optional (H, W) ink of the page (`leads.ink`); the leads are then also ranked by
      attribution per unit of ink (`ink_top3*`), which does not favour the leads with most trace.

  Returns:
    `share` of the map's mass on the territory's boxes, `chance` (those boxes' share of the image
    area), `lift` = share / chance; `top3`, the three leads of highest density (mass / box area;
    the rhythm strip is not ranked), `top3_hits` (how many are territory leads), `top3_hit` (at
    least two; `top3_chance` is its probability for a random ranking), `top1_hit`.
  """
  lead_boxes = layout_lib.lead_boxes() if lead_boxes is None else lead_boxes
  heat = np.asarray(heat, np.float64)
  territory = set(territory_leads)
  unknown = territory - set(layout_lib.LEADS)
  if unknown:
    raise ValueError(f"territory_leads {sorted(unknown)} are not ECG leads; expected names from "
                     f"{layout_lib.LEADS}.")
  boxes = territory | ({layout_lib.RHYTHM} if rhythm_lead in territory else set())
  mass = lead_sums(heat, box, lead_boxes)
  area = lead_sums(np.ones_like(heat), box, lead_boxes)
  total = float(heat.sum())
  share = sum(mass[b] for b in boxes) / total if total > 0 else 0.0
  chance = sum(area[b] for b in boxes) / heat.size

  def ranked(values):
    return sorted(layout_lib.LEADS, key=lambda lead: values[lead], reverse=True)[:3]

  def hits(top):
    count = len(territory.intersection(top))
    return {"top3": top, "top3_hits": count, "top3_hit": count >= 2, "top1_hit": top[0] in territory}

  result = {"share": share, "chance": chance, "lift": share / chance if chance > 0 else 0.0,
            **hits(ranked({k: mass[k] / max(area[k], 1.0) for k in layout_lib.LEADS}))}
  if page_ink is not None:
    ink_mass = lead_sums(np.asarray(page_ink, np.float64), box, lead_boxes)
    per_ink = {k: mass[k] / ink_mass[k] if ink_mass[k] > 0 else 0.0 for k in layout_lib.LEADS}
    result.update({f"ink_{k}": v for k, v in hits(ranked(per_ink)).items()})
  return result


# ---------------------------------------------------------------------------------------------
# The model-parameter randomisation test.
# ---------------------------------------------------------------------------------------------


def parameter_layers(logit_fn: LogitFn, images: jax.Array, params: Mapping[str, Any]) -> list[str]:
  """The top-level entries of `params` in the order the model calls them (input to logits)."""
  order = []
  for layer in layers(logit_fn, images):
    name = layer.path.split("/")[0]
    if name in params and name not in order:
      order.append(name)
  order += [name for name in params if name not in order]  # Parameters no module call showed.
  return order


def cascading_randomisation(model: nn.Module, variables: Mapping[str, Any], images: jax.Array,
                            key: jax.Array) -> list[tuple[str, dict[str, Any]]]:
  """Adebayo et al.'s cascade: the variables with the top 1, 2, ..., all parameter layers re-drawn.

  Each layer's new parameters are those `model.init(key, ...)` draws (the model's own
  initialisers); the other variables (BatchNorm statistics) stay as trained. Returns
  [(name of the layer randomised at this step, variables), ...], top layer first.
  """
  params = dict(variables["params"])
  logit_fn = functools.partial(model.apply, variables)
  order = parameter_layers(logit_fn, images, params)
  fresh = model.init(key, images[:1])["params"]
  steps = []
  for name in reversed(order):
    params = {**params, name: fresh[name]}
    steps.append((name, {**variables, "params": params}))
  return steps


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman's rank correlation of two maps of the same shape (ties take their mean rank)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
  if a.shape != b.shape:
    raise ValueError(f"rank_correlation: maps of {a.size} and {b.size} values.")
  if np.ptp(a) == 0 or np.ptp(b) == 0:
    return 0.0  # A constant map ranks nothing; no correlation.
  return float(stats.spearmanr(a, b).statistic)


# ---------------------------------------------------------------------------------------------
# Deletion and insertion.
# ---------------------------------------------------------------------------------------------


def patch_segments(hw: tuple[int, int], patch: int) -> np.ndarray:
  """(H, W) int32 segment ids: `patch` x `patch` squares, row by row (edge squares smaller)."""
  h, w = hw
  cols = -(-w // patch)
  rows_id = np.arange(h)[:, None] // patch
  cols_id = np.arange(w)[None, :] // patch
  return (rows_id * cols + cols_id).astype(np.int32)


def lead_segments(hw: tuple[int, int], box: tuple[int, int, int, int],
                  lead_boxes: Mapping[str, tuple[float, float, float, float]] | None = None
                  ) -> tuple[np.ndarray, list[str]]:
  """(H, W) int32 ids of the lead boxes (-1 outside every box: never removed) and their names."""
  lead_boxes = layout_lib.lead_boxes() if lead_boxes is None else lead_boxes
  segments = np.full(hw, -1, np.int32)
  names = list(lead_boxes)
  for i, (r0, r1, c0, c1) in enumerate(lead_pixel_boxes(box, lead_boxes).values()):
    segments[max(r0, 0):r1, max(c0, 0):c1] = i
  return segments, names


def segment_order(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
  """Segment ids by the sum of `values` over each, largest first (ties by id)."""
  ids = np.unique(segments[segments >= 0])
  sums = np.bincount(segments[segments >= 0], weights=np.asarray(values, np.float64)[segments >= 0],
                     minlength=int(ids.max()) + 1)[ids]
  return ids[np.lexsort((ids, -sums))]


def ink_order(image: np.ndarray, segments: np.ndarray, value_range: Sequence[float]) -> np.ndarray:
  """Segments with most ink (darkness below paper white) first: the ordering any trace-following map
  gets for free, so a method must beat it to show it knows more than where the trace is."""
  return segment_order(ink(image, value_range), segments)


def random_order(segments: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return rng.permutation(np.unique(segments[segments >= 0]))


@functools.partial(jax.jit, static_argnames=("logit_fn",))
def _probabilities(logit_fn: LogitFn, images: jax.Array) -> jax.Array:
  return jax.nn.softmax(logit_fn(images).astype(jnp.float32), axis=-1)


def perturbation_curves(logit_fn: LogitFn, image: np.ndarray, target: int, segments: np.ndarray,
                        order: np.ndarray, *, steps: int = 16, fill: float = 1.0,
                        batch_size: int = 16) -> dict[str, np.ndarray]:
  """Deletion and insertion curves of one page for one ordering of its segments.

  After k of `steps` equal steps, the first round(k / steps * len(order)) segments of `order` are
  removed (deletion: set to `fill`, paper white at the top of the value range) or are the only ones
  shown (insertion: every other segment set to `fill`). Pixels of no segment (id -1) stay as they
  are in both. The score is the softmax probability of `target`.

  Returns:
    {"fraction": (steps + 1,) share of segments removed or shown, "deletion": (steps + 1,),
     "insertion": (steps + 1,)}.
  """
  image = np.asarray(image, np.float32)
  if image.ndim != 3 or segments.shape != image.shape[:2]:
    raise ValueError(f"perturbation_curves: image {image.shape} (H, W, C) and segments "
                     f"{segments.shape} (H, W) do not match.")
  counts = np.round(np.linspace(0, len(order), steps + 1)).astype(int)
  rank = np.full(int(segments.max()) + 1, np.iinfo(np.int32).max, np.int64)
  rank[order] = np.arange(len(order))
  pixel_rank = np.where(segments >= 0, rank[np.maximum(segments, 0)], -1)
  in_segment = (segments >= 0)[..., None]
  inputs = []
  for k in counts:
    first_k = ((pixel_rank >= 0) & (pixel_rank < k))[..., None]
    inputs.append(np.where(first_k, fill, image))  # Deletion.
  for k in counts:
    first_k = ((pixel_rank >= 0) & (pixel_rank < k))[..., None]
    inputs.append(np.where(in_segment & ~first_k, fill, image))  # Insertion.
  inputs = np.stack(inputs)
  pad = -len(inputs) % batch_size  # One compiled shape whatever the number of steps.
  inputs = np.concatenate([inputs, np.repeat(inputs[-1:], pad, axis=0)])
  probs = np.concatenate([np.asarray(_probabilities(logit_fn, jnp.asarray(inputs[i:i + batch_size])))
                          for i in range(0, len(inputs), batch_size)])[:2 * (steps + 1), target]
  return {"fraction": counts / max(len(order), 1), "deletion": probs[:steps + 1],
          "insertion": probs[steps + 1:]}


def auc(fraction: np.ndarray, curve: np.ndarray) -> float:
  """Area under a curve over fraction 0..1 (trapezoid rule)."""
  x, y = np.asarray(fraction, np.float64), np.asarray(curve, np.float64)
  return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
