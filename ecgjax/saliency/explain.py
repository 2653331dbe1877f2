"""Explaining pages end to end: attributions, per-lead numbers, figures and one JSON per method.

`explain_pages` runs an attribution method over pages in groups of one shape, sums each map per
lead, draws the overlay and the bar chart and writes the numbers as JSON; `write_test_maps` is what
the training job calls at its end, on the first pages of the test fold.

Not here: the attribution maths (`attribution`), lead geometry (`leads`), drawing (`figures`), or
the command line (`__main__`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from ecgjax import report
from ecgjax.classes import CLASS_NAMES
from ecgjax.data import layout as layout_lib
from ecgjax.data import pipeline
from ecgjax.data.panel import read_rgb
from ecgjax.saliency.attribution import (
    Contrast, LogitFn, attribute, completeness, contrast_targets, integrated_gradients)
from ecgjax.saliency.figures import plot_leads, plot_overlay
from ecgjax.saliency.leads import heat_map, ink, per_lead
from ecgjax.saliency.pages import Page, page_from_example


def safe_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@functools.partial(jax.jit, static_argnums=0)
def _logits(logit_fn: LogitFn, x: jax.Array) -> jax.Array:
  return logit_fn(x)  # One compiled program: an un-jitted Flax apply runs op by op (seconds).


def attribute_pages(logit_fn: LogitFn, inputs: Sequence[np.ndarray], *, method: str,
                    baseline: float, seed: int = 0, pages_per_call: int = 4,
                    contrast_steps: int = 0, prepare=None, **options):
  """The predicted class of each input explained, `pages_per_call` inputs per call.

  Every call has the same shape (the last input repeats), so the method compiles once; input i's
  noise is keyed by (seed, i // pages_per_call, i % pages_per_call). `prepare` maps a stacked group
  to the model's input (e.g. `pipeline.normalize` for uint8 pages); `options` go to
  `attribution.attribute`. Integrated Gradients starts from `baseline`; with `contrast_steps > 0`,
  Integrated Gradients of logit[predicted] - logit[runner-up] from it too.

  Returns (probabilities (N, classes), attributions (N, ...), completeness (N, 2) or None,
  contrast attributions or None, their completeness or None), as float64/NumPy.
  """
  prepare = prepare or (lambda x: jnp.asarray(x, jnp.float32))
  key = jax.random.key(seed)
  probs, attributions, gaps, contrasts, contrast_gaps = [], [], [], [], []
  for start in range(0, len(inputs), pages_per_call):
    group = list(inputs[start:start + pages_per_call])
    group += [group[-1]] * (pages_per_call - len(group))  # Same shape every call: one compile.
    x = prepare(jnp.asarray(np.stack(group)))
    logits = np.asarray(_logits(logit_fn, x), np.float64)
    targets = jnp.asarray(logits.argmax(-1), jnp.int32)
    attr = attribute(method, logit_fn, x, targets,
                     key=jax.random.fold_in(key, start // pages_per_call), baseline=baseline,
                     **options)
    if method == "integrated_gradients":
      gaps.append(np.stack(completeness(logit_fn, x, attr, targets, baseline), axis=-1))
    probs.append(report.softmax(logits, axis=-1))
    attributions.append(np.asarray(attr))
    if contrast_steps > 0:
      pair = contrast_targets(targets, np.argsort(logits, axis=-1)[:, -2], logits.shape[-1])
      contrast = Contrast(logit_fn)
      attr = integrated_gradients(contrast, x, pair, baseline=baseline, steps=contrast_steps,
                                  chunk_size=int(options.get("chunk_size", 16)))
      contrasts.append(np.asarray(attr))
      contrast_gaps.append(np.stack(completeness(contrast, x, attr, pair, baseline), axis=-1))
  num = len(inputs)

  def joined(parts):
    return np.concatenate(parts)[:num] if parts else None

  return (joined(probs), joined(attributions), joined(gaps), joined(contrasts),
          joined(contrast_gaps))


def explain_pages(logit_fn: LogitFn, pages: Sequence[Page], out_dir: str, *, method: str,
                  value_range: Sequence[float] = (-1.0, 1.0), seed: int = 0,
                  lead_boxes: Mapping[str, tuple[float, float, float, float]] | None = None,
                  pages_per_call: int = 4, contrast_steps: int = 0, **options) -> dict[str, Any]:
  """Attributions for `pages`, written as overlay and bar-chart PNGs and one JSON.

  Pages go to the attribution method `pages_per_call` at a time (all with the same shape, so one
  compilation); page i's noise is keyed by (seed, i // pages_per_call, i % pages_per_call).

  The predicted class is explained. Integrated Gradients starts from a blank page (every pixel at
  the top of `value_range`: paper without ink), and the JSON records its completeness. Each lead's
  attribution is also given per unit of its own ink, relative to the median lead
  (`per_lead(..., page_ink=...)`). With `contrast_steps > 0`, Integrated Gradients (that many
  steps, from the blank page) of the margin logit[predicted] - logit[runner-up] gives each lead's
  signed contribution, in logits, to choosing the predicted class over the runner-up; they add up
  to the margin minus the blank page's margin.

  Returns:
    {"json": path, "pages": [{"overlay": path, "leads": path}, ...]}.
  """
  if not pages:
    raise ValueError("explain_pages: no pages given.")
  lead_boxes = layout_lib.lead_boxes() if lead_boxes is None else lead_boxes
  os.makedirs(out_dir, exist_ok=True)
  baseline = float(value_range[1])
  probs, attributions, gaps, contrasts, contrast_gaps = attribute_pages(
      logit_fn, [p.image for p in pages], method=method, baseline=baseline, seed=seed,
      pages_per_call=pages_per_call, contrast_steps=contrast_steps,
      prepare=lambda x: pipeline.normalize(x, value_range), **options)
  predicted = probs.argmax(-1)

  records, written = [], []
  for i, page in enumerate(pages):
    leads = per_lead(attributions[i], page.box, lead_boxes, page_ink=ink(page.image))
    pred = CLASS_NAMES[predicted[i]]
    contrast = None
    if contrasts is not None:
      second = int(np.argsort(probs[i])[-2])
      contributions = per_lead(contrasts[i], page.box, lead_boxes)["signed"]
      contrast = {"versus": CLASS_NAMES[second],
                  "margin": float(np.log(probs[i, predicted[i]]) - np.log(probs[i, second])),
                  "margin_over_blank_page": float(contrast_gaps[i, 1]),
                  "attribution_sum": float(contrast_gaps[i, 0]), "steps": int(contrast_steps),
                  "lead_contribution": contributions,
                  "other_contribution": float(contrast_gaps[i, 0]) - sum(contributions.values())}
    true = CLASS_NAMES[page.label] if page.label is not None else "unknown"
    title = (f"{page.name} ({method})\npredicted {pred} (p={probs[i, predicted[i]]:.2f}), "
             f"true {true}" + (f" (p={probs[i, page.label]:.2f})" if page.label is not None else ""))
    stem = os.path.join(out_dir, f"{i:02d}_{safe_name(page.name)[:40]}_{method}")
    overlay, bars = stem + "_overlay.png", stem + "_leads.png"
    plot_overlay(page, heat_map(attributions[i]), title, overlay, lead_boxes)
    plot_leads(leads, title, bars, contrast)
    record = {
        "page": page.name, "source": page.source, "method": method,
        "true_class": None if page.label is None else CLASS_NAMES[page.label],
        "predicted_class": pred,
        "probabilities": dict(zip(CLASS_NAMES, map(float, probs[i]))),
        "explained_class": pred, "content_box": list(page.box), "lead_share": leads["share"],
        "other_share": leads["other"], "lead_density": leads["density"],
        "lead_signed_sum": leads["signed"], "lead_ink_relative": leads["ink_relative"],
        "top_leads": leads["ranking"][:3], "top_leads_per_ink": leads["ink_ranking"][:3],
        "overlay": overlay, "lead_chart": bars,
    }
    if contrast is not None:
      record["contrast"] = contrast
    if gaps is not None:
      record["completeness"] = {"attribution_sum": float(gaps[i, 0]),
                                "logit_difference": float(gaps[i, 1]), "baseline": baseline}
    records.append(record)
    written.append({"overlay": overlay, "leads": bars})
  json_path = os.path.join(out_dir, f"saliency_{method}.json")
  with open(json_path, "w") as f:
    json.dump({"method": method, "options": options, "contrast_steps": int(contrast_steps),
               "seed": seed, "pages": records}, f, indent=2)
  return {"json": json_path, "pages": written}


def _method_options(saliency: ml_collections.ConfigDict) -> dict[str, Any]:
  """The options `config.saliency` gives its method (SmoothGrad's samples, IG's steps)."""
  chunk = {"chunk_size": int(saliency.chunk_size)}
  return {"smoothgrad": {"num_samples": int(saliency.num_samples), **chunk},
          "integrated_gradients": {"steps": int(saliency.steps), **chunk}}.get(saliency.method, {})


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
  if config.data.get("input", "image") == "signals":
    return _write_signal_test_maps(loaded, source, config, os.path.join(workdir, "saliency"))
  num = min(int(config.saliency.num_pages), len(source))
  pages = []
  for i in range(num):
    example = source[i]
    image_id = example.get("image_id", b"")
    image_id = image_id.decode() if isinstance(image_id, bytes) else str(image_id)
    pages.append(page_from_example(example, config.data, image_id or f"test{i}"))
  method = config.saliency.method
  options = _method_options(config.saliency)
  return explain_pages(loaded.logit_fn, pages, os.path.join(workdir, "saliency"), method=method,
                       value_range=config.data.value_range, seed=int(config.seed),
                       contrast_steps=int(config.saliency.get("contrast_steps", 0)),
                       **options)


def _write_signal_test_maps(loaded, source: pipeline.Source, config: ml_collections.ConfigDict,
                            out_dir: str) -> dict[str, Any]:
  """`write_test_maps` for a signal run: the pages behind the first test examples (the files under
  `manual_dir`, or synthetic pages rendered again), explained on their digitized traces. A data
  set of simulated records (`ecg_signals_sim`) has no pages: nothing is drawn."""
  from ecgjax.data import digitized  # pylint: disable=g-import-not-at-top
  from ecgjax.saliency import signals  # pylint: disable=g-import-not-at-top
  read = digitized.Preprocess(config)
  pages = []
  for i in range(min(int(config.saliency.num_pages), len(source))):
    example = source[i]
    path = example.get("source_path", b"")
    path = path.decode() if isinstance(path, bytes) else str(path)
    label = int(example["label"])
    page = read.page(path, label)
    if page is None:
      logging.info("No saliency maps: %s holds simulated records, not pages.",
                   config.dataset.name)
      return {}
    name = os.path.splitext(os.path.basename(path))[0] if isinstance(page, str) else path
    rgb = read_rgb(page) if isinstance(page, str) else page
    pages.append(signals.signal_page(rgb, name, read.hz, label, source=path))
  method = config.saliency.method
  options = _method_options(config.saliency)
  return signals.explain_signal_pages(
      loaded.logit_fn, pages, out_dir, method=method,
      seed=int(config.seed), contrast_steps=int(config.saliency.get("contrast_steps", 0)),
      **options)
