r"""Are the saliency maps right? Territory localisation, sanity checks and deletion curves, as tables.

  python experiments/explain_eval.py --workdir=RUN_ON_SYNTHETIC_PAGES --out=docs/results/explain \
      [--real_workdir=RUN_ON_REAL_PAGES --real_pages='.../MI(12).jpg']

`--workdir` is a run trained on synthetic pages (`ecg_synth`): the script draws fresh `mi` and
`history_of_mi` pages (seeds no builder uses) whose MI territory it knows, explains the true class
with every method in `--methods`, and prints three tables (`ecgjax.saliency.evaluation` holds the
maths):

1. **Territory localisation**: the share of each method's attribution on the territory's leads
   (`synth.TERRITORY_LEADS`; the rhythm strip too when it shows one of them) against the share of
   the image those boxes cover (chance), their ratio (lift), and how often at least two of the
   map's three densest leads are territory leads (top-3 hit; by density, and by attribution per
   unit of the lead's own ink). The row `ink (no model)` uses the page's ink as the map: what a
   map that merely follows the trace scores.
2. **Sanity check** (Adebayo et al. 2018): the model's layers re-initialised from the top down;
   Spearman's rank correlation between each method's maps and the trained model's, after the top
   layer and after all layers. A method passes when the last is below 0.3.
3. **Deletion and insertion** (over 16 px patches and over lead boxes, paper-white fill): the area
   under the probability of the explained class as the most-attributed segments are removed from
   the page (deletion: lower is better) or revealed on a blank page (insertion: higher is better),
   against random orderings and against removing the darkest segments first (ink).

Writes under `--out`: `explain_eval.md` (the tables), `explain_eval.json` (per page), the cascade
and deletion figures, and maps of one synthetic page (and of `--real_pages` under
`--real_workdir`) with the per-lead read-out (`python -m ecgjax.saliency`'s figures).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from ecgjax import checkpoints
from ecgjax.classes import CLASS_NAMES, class_index
from ecgjax.data import pipeline
from ecgjax.data import synth
from ecgjax.saliency import attribution
from ecgjax.saliency import evaluation
from ecgjax.saliency import explain
from ecgjax.saliency import leads as leads_lib
from ecgjax.saliency import pages as pages_lib

FLAGS = flags.FLAGS
PASS_BELOW = 0.3  # Rank correlation after randomising every layer; the threshold.


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_string("workdir", None, "A run trained on synthetic pages (ecg_synth).")
  flags.DEFINE_string("checkpoint", None, "'best', 'latest' or a step number; default: the one "
                      "the run reported (its config.eval.checkpoint).")
  flags.DEFINE_string("out", None, "Directory for the tables, JSON and figures.")
  flags.DEFINE_list("methods", list(attribution.METHODS), "Attribution methods to evaluate.")
  flags.DEFINE_integer("pages_per_class", 12, "Fresh synthetic mi and history_of_mi pages each.")
  flags.DEFINE_integer("sanity_pages", 4, "Pages of the randomisation test.")
  flags.DEFINE_integer("deletion_pages", 8, "Pages of the deletion and insertion curves.")
  flags.DEFINE_integer("deletion_steps", 16, "Points of each deletion/insertion curve, minus one.")
  flags.DEFINE_integer("patch", 16, "Patch size (model-input pixels) of the deletion segments.")
  flags.DEFINE_integer("random_orders", 3, "Random orderings averaged as the deletion reference.")
  flags.DEFINE_integer("num_samples", 50, "SmoothGrad: noisy copies per page.")
  flags.DEFINE_float("noise_scale", 0.15, "SmoothGrad: noise std / the page's value span.")
  flags.DEFINE_integer("steps", 64, "Integrated Gradients: path intervals.")
  flags.DEFINE_integer("chunk_size", 16, "Forward-backward passes per jitted call.")
  flags.DEFINE_bool("contrast", True, "Also explain the true class's margin over the runner-up "
                    "(territory table rows 'METHOD vs runner-up').")
  flags.DEFINE_integer("seed", 0, "Seed of the noise, the random orderings and re-initialisation.")
  flags.DEFINE_string("real_workdir", None, "Optional: a run trained on real pages, for a figure.")
  flags.DEFINE_multi_string("real_pages", [], "Real page files to explain under --real_workdir.")
  flags.mark_flags_as_required(["workdir", "out"])


@dataclasses.dataclass
class SynthPage:
  page: pages_lib.Page
  territory: str
  rhythm_lead: str


def synth_builder_config(config):
  """The `ecg_synth` builder config a run was trained on; ValueError for any other data set."""
  from ecgjax.data import ecg_synth  # pylint: disable=g-import-not-at-top
  configs = {c.name: c for c in ecg_synth.EcgSynth.BUILDER_CONFIGS}
  if config.dataset.name != "ecg_synth" or config.dataset.config not in configs:
    raise ValueError(f"--workdir: its run was trained on {config.dataset.name!r}; territory "
                     "localisation needs a run trained on synthetic pages (ecg_synth), whose MI "
                     "territory is known.")
  return configs[config.dataset.config]


def synthetic_pages(config, per_class: int) -> list[SynthPage]:
  """Fresh `mi` and `history_of_mi` pages of the run's `ecg_synth` config, with their territory."""
  builder_config = synth_builder_config(config)
  out = []
  for label in ("mi", "history_of_mi"):
    for i in range(per_class):
      seed = synth.page_seed("explain_eval", label, i)
      jpeg, record, geometry = synth.panel_example(
          label, seed, builder_config.width, builder_config.height,
          quality=builder_config.jpeg_quality)
      example = {"image": jpeg, "label": class_index(label), "source_path": f"synth:{label}:{seed}"}
      page = pages_lib.page_from_example(example, config.data, f"{label}_{i}")
      out.append(SynthPage(page, record.params["territory"], geometry.rhythm_lead))
  return out


def attribute_pages(logit_fn, images, targets, method: str, key, options) -> np.ndarray:
  """(N, H, W) heat maps of `method`, 4 pages per call (one compiled shape)."""
  maps = []
  for start in range(0, len(images), 4):
    batch, target = images[start:start + 4], targets[start:start + 4]
    pad = 4 - len(batch)
    batch = jnp.concatenate([batch, jnp.repeat(batch[-1:], pad, 0)]) if pad else batch
    target = jnp.concatenate([target, jnp.repeat(target[-1:], pad, 0)]) if pad else target
    attr = attribution.attribute(method, logit_fn, batch, target,
                                 key=jax.random.fold_in(key, start), **options)
    maps.append(leads_lib.heat_map(np.asarray(attr))[:len(images[start:start + 4])])
  return np.concatenate(maps)


def method_options(method: str, value_range) -> dict[str, Any]:
  return {"gradient": {}, "grad_cam": {},
          "smoothgrad": {"num_samples": FLAGS.num_samples, "noise_scale": FLAGS.noise_scale,
                         "chunk_size": FLAGS.chunk_size},
          "integrated_gradients": {"steps": FLAGS.steps, "chunk_size": FLAGS.chunk_size,
                                   "baseline": float(value_range[1])}}[method]


def evaluate(loaded: checkpoints.LoadedModel, methods: Sequence[str], *, per_class: int,
             sanity_pages: int, deletion_pages: int, deletion_steps: int, patch: int,
             random_orders: int, seed: int, options_for, contrast: bool = True
             ) -> dict[str, Any]:
  """The three evaluations on fresh synthetic pages; returns per-method summaries and per-page rows.

  `options_for(method, value_range)` gives the keyword arguments of `attribution.attribute`. With
  `contrast`, the territory table also has each method explaining the true class's margin over the
  runner-up (`attribution.Contrast`): what tells the class from its nearest rival.
  """
  config = loaded.config
  value_range = tuple(config.data.value_range)
  pages = synthetic_pages(config, per_class)
  images = pipeline.normalize(jnp.asarray(np.stack([p.page.image for p in pages])), value_range)
  targets = jnp.asarray([p.page.label for p in pages], jnp.int32)
  probs = np.asarray(jax.nn.softmax(loaded.logit_fn(images), axis=-1))
  key = jax.random.key(seed)
  inks = [leads_lib.ink(p.page.image) for p in pages]
  heats, seconds = {}, {}
  for method in methods:
    start = time.perf_counter()
    heats[method] = attribute_pages(loaded.logit_fn, images, targets, method, key,
                                    options_for(method, value_range))
    seconds[method] = (time.perf_counter() - start) / len(pages)
    logging.info("%s: %d maps in %.0f s.", method, len(pages), seconds[method] * len(pages))
  if contrast:
    rivals = np.where(np.arange(probs.shape[1])[None] == np.asarray(targets)[:, None], -1.0, probs)
    pairs = attribution.contrast_targets(targets, rivals.argmax(-1), probs.shape[1])
    for method in methods:
      heats[f"{method} vs runner-up"] = attribute_pages(
          attribution.Contrast(loaded.logit_fn), images, pairs, method, key,
          options_for(method, value_range))

  # 1. Territory localisation (with the page's ink as a map that only follows the trace).
  territory = {}
  for name, maps in [*heats.items(), ("ink (no model)", np.stack(inks))]:
    rows = [evaluation.territory_localisation(maps[i], p.page.box,
                                              synth.TERRITORY_LEADS[p.territory], p.rhythm_lead,
                                              page_ink=inks[i]) for i, p in enumerate(pages)]
    territory[name] = {
        "share": float(np.mean([r["share"] for r in rows])),
        "chance": float(np.mean([r["chance"] for r in rows])),
        "lift": float(np.mean([r["lift"] for r in rows])),
        "lift_by_class": {CLASS_NAMES[c]: float(np.mean([r["lift"] for r, p in zip(rows, pages)
                                                          if p.page.label == c]))
                          for c in sorted({p.page.label for p in pages})},
        "top3_hit_rate": float(np.mean([r["top3_hit"] for r in rows])),
        "ink_top3_hit_rate": float(np.mean([r["ink_top3_hit"] for r in rows])),
        "top1_hit_rate": float(np.mean([r["top1_hit"] for r in rows])),
        "top3_chance": float(np.mean([evaluation.top3_chance(len(synth.TERRITORY_LEADS[p.territory]))
                                      for p in pages])),
        "pages": [{"page": p.page.name, "territory": p.territory, "rhythm_lead": p.rhythm_lead,
                   **{k: (v if not isinstance(v, np.generic) else v.item()) for k, v in r.items()}}
                  for p, r in zip(pages, rows)]}

  # 2. Cascading randomisation on the first `sanity_pages` pages.
  sanity = {m: {"layers": [], "rank_correlation": []} for m in methods}
  n = min(sanity_pages, len(pages))
  steps = evaluation.cascading_randomisation(loaded.model, loaded.variables, images[:1],
                                             jax.random.fold_in(key, 10**6))
  for layer, variables in steps:
    logging.info("Randomisation: layers down to %s re-drawn.", layer)
    randomised = dataclasses.replace(loaded, variables=variables)
    for method in methods:
      maps = attribute_pages(randomised.logit_fn, images[:n], targets[:n], method, key,
                             options_for(method, value_range))
      corr = [evaluation.rank_correlation(heats[method][i], maps[i]) for i in range(n)]
      # The same over the trace's pixels alone: a map that is zero on blank paper (Integrated
      # Gradients from a blank page) correlates through its zeros whatever the model.
      on_ink = [evaluation.rank_correlation(heats[method][i][inks[i] > 0.25],
                                            maps[i][inks[i] > 0.25]) for i in range(n)]
      sanity[method]["layers"].append(layer)
      sanity[method]["rank_correlation"].append(float(np.mean(corr)))
      sanity[method].setdefault("rank_correlation_on_ink", []).append(float(np.mean(on_ink)))
  for method in methods:
    last = sanity[method]["rank_correlation"][-1]
    sanity[method].update(top_layer=sanity[method]["rank_correlation"][0], all_layers=last,
                          all_layers_on_ink=sanity[method]["rank_correlation_on_ink"][-1],
                          passes=bool(last < PASS_BELOW))

  # 3. Deletion and insertion over patches and over lead boxes.
  rng = np.random.default_rng(seed)
  fill = float(value_range[1])
  n = min(deletion_pages, len(pages))
  curves: dict[str, dict[str, list]] = {}

  def add(unit, name, curve):
    entry = curves.setdefault(unit, {}).setdefault(name, {"deletion": [], "insertion": []})
    entry["fraction"] = curve["fraction"].tolist()
    for kind in ("deletion", "insertion"):
      entry[kind].append(curve[kind].tolist())

  for i in range(n):
    logging.info("Deletion and insertion: page %d of %d.", i + 1, n)
    image, target = np.asarray(images[i]), int(targets[i])
    hw = image.shape[:2]
    units = {"patch": (evaluation.patch_segments(hw, patch), deletion_steps),
             "lead": (evaluation.lead_segments(hw, pages[i].page.box)[0], None)}
    for unit, (segments, unit_steps) in units.items():
      count = len(np.unique(segments[segments >= 0]))
      run = lambda order: evaluation.perturbation_curves(  # pylint: disable=cell-var-from-loop
          loaded.logit_fn, image, target, segments, order, steps=unit_steps or count, fill=fill)
      for method in methods:
        add(unit, method, run(evaluation.segment_order(heats[method][i], segments)))
      add(unit, "ink", run(evaluation.ink_order(image, segments, value_range)))
      for _ in range(random_orders):
        add(unit, "random", run(evaluation.random_order(segments, rng)))
  deletion = {}
  for unit, by_name in curves.items():
    deletion[unit] = {}
    for name, entry in by_name.items():
      mean = {k: np.mean(entry[k], axis=0) for k in ("deletion", "insertion")}
      deletion[unit][name] = {
          "deletion_auc": evaluation.auc(entry["fraction"], mean["deletion"]),
          "insertion_auc": evaluation.auc(entry["fraction"], mean["insertion"]),
          "fraction": entry["fraction"], "deletion": mean["deletion"].tolist(),
          "insertion": mean["insertion"].tolist()}
    for name in methods:
      deletion[unit][name]["deletion_vs_random"] = (deletion[unit][name]["deletion_auc"]
                                                    / deletion[unit]["random"]["deletion_auc"])
  return {
      "pages": len(pages), "accuracy": float(np.mean(probs.argmax(-1) == np.asarray(targets))),
      "explained": "the true class", "seconds_per_page": seconds, "territory": territory,
      "sanity": sanity, "deletion": deletion,
      "pages_detail": [{"page": p.page.name, "territory": p.territory,
                        "rhythm_lead": p.rhythm_lead,
                        "probabilities": dict(zip(CLASS_NAMES, map(float, probs[i])))}
                       for i, p in enumerate(pages)],
  }


def tables(result: dict[str, Any], methods: Sequence[str], default_method: str) -> str:
  """The three tables as Markdown."""
  lines = [f"{result['pages']} fresh synthetic pages (mi and history_of_mi), the true class "
           f"explained; the model's accuracy on them: {result['accuracy']:.2f}.", "",
           "**Territory localisation** (share of the map on the territory's lead boxes)", "",
           "| map | share | chance | lift | lift: mi / history_of_mi | top-3 hit | top-3 hit per ink | "
           "top-1 hit | s/page |", "|---|---|---|---|---|---|---|---|---|"]
  territory = result["territory"]
  for name, row in territory.items():
    cost = result["seconds_per_page"].get(name)
    by_class = " / ".join(f"{row['lift_by_class'].get(c, float('nan')):.2f}"
                          for c in ("mi", "history_of_mi"))
    lines.append(f"| {name} | {row['share']:.3f} | {row['chance']:.3f} | {row['lift']:.2f} | "
                 f"{by_class} | {row['top3_hit_rate']:.2f} | {row['ink_top3_hit_rate']:.2f} | "
                 f"{row['top1_hit_rate']:.2f} | {'' if cost is None else f'{cost:.2f}'} |")
  any_row = next(iter(territory.values()))
  lines += ["", f"Top-3 hit: at least two of the three densest leads are territory leads (a random "
            f"ranking: {any_row['top3_chance']:.2f}).", "",
            "**Sanity check**: cascading randomisation (Spearman rank correlation with the trained "
            f"model's maps; passes below {PASS_BELOW})", "",
            "| method | top layer re-drawn | all layers re-drawn | all layers, trace pixels only | "
            "result |", "|---|---|---|---|---|"]
  for method in methods:
    row = result["sanity"][method]
    verdict = "passes" if row["passes"] else "**fails**"
    mark = " (default)" if method == default_method else ""
    lines.append(f"| {method}{mark} | {row['top_layer']:.3f} | {row['all_layers']:.3f} | "
                 f"{row['all_layers_on_ink']:.3f} | {verdict} |")
  for unit, title in (("patch", "patches"), ("lead", "lead boxes")):
    rows = result["deletion"][unit]
    lines += ["", f"**Deletion and insertion** over {title} (area under the explained class's "
              "probability; deletion: lower is better, insertion: higher)", "",
              "| ordering | deletion AUC | insertion AUC | deletion / random |", "|---|---|---|---|"]
    for name in [*methods, "ink", "random"]:
      row = rows[name]
      ratio = row["deletion_auc"] / rows["random"]["deletion_auc"]
      lines.append(f"| {name} | {row['deletion_auc']:.3f} | {row['insertion_auc']:.3f} | "
                   f"{ratio:.2f} |")
  return "\n".join(lines) + "\n"


def figures(result: dict[str, Any], methods: Sequence[str], out: str) -> list[str]:
  """The cascade curves and the mean deletion/insertion curves over patches."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = [os.path.join(out, "sanity_cascade.png"), os.path.join(out, "deletion_curves.png")]
  fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
  for method in methods:
    row = result["sanity"][method]
    ax.plot(range(1, len(row["layers"]) + 1), row["rank_correlation"], marker="o", label=method)
  layers = result["sanity"][methods[0]]["layers"]
  ax.set_xticks(range(1, len(layers) + 1), layers, rotation=45, ha="right", fontsize=7)
  ax.axhline(PASS_BELOW, color="gray", ls="--", lw=0.8)
  ax.set_ylabel("rank correlation with\nthe trained model's maps")
  ax.set_xlabel("layers re-initialised, from the top (cumulative)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(paths[0])
  plt.close(fig)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
  rows = result["deletion"]["patch"]
  for kind, ax in zip(("deletion", "insertion"), axes):
    for name in [*methods, "ink", "random"]:
      ax.plot(rows[name]["fraction"], rows[name][kind], label=name,
              ls="--" if name in ("ink", "random") else "-")
    ax.set_title(f"{kind} (patches)")
    ax.set_xlabel(f"fraction of patches {'removed' if kind == 'deletion' else 'shown'}")
    ax.set_ylabel("probability of the explained class")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(paths[1])
  plt.close(fig)
  return paths


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = set(FLAGS.methods) - set(attribution.METHODS)
  if unknown:
    sys.exit(f"--methods: unknown {sorted(unknown)}; available: {attribution.METHODS}.")
  try:  # A workdir that is no run, or no run on synthetic pages: one line, no traceback.
    loaded = checkpoints.load_model(FLAGS.workdir, FLAGS.checkpoint)
    synth_builder_config(loaded.config)
    real = (checkpoints.load_model(FLAGS.real_workdir, FLAGS.checkpoint)
            if FLAGS.real_workdir and FLAGS.real_pages else None)
  except (OSError, ValueError, checkpoints.CheckpointError) as e:
    sys.exit(f"error: {e}")
  os.makedirs(FLAGS.out, exist_ok=True)
  start = time.perf_counter()
  result = evaluate(loaded, FLAGS.methods, per_class=FLAGS.pages_per_class,
                    sanity_pages=FLAGS.sanity_pages, deletion_pages=FLAGS.deletion_pages,
                    deletion_steps=FLAGS.deletion_steps, patch=FLAGS.patch,
                    random_orders=FLAGS.random_orders, seed=FLAGS.seed,
                    options_for=method_options, contrast=FLAGS.contrast)
  default_method = default.base_config().saliency.method  # What runs use unless told otherwise.
  text = tables(result, FLAGS.methods, default_method)
  result["command"] = " ".join(sys.argv)
  result["seconds"] = time.perf_counter() - start
  with open(os.path.join(FLAGS.out, "explain_eval.json"), "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(FLAGS.out, "explain_eval.md"), "w") as f:
    f.write(text)
  figures(result, FLAGS.methods, FLAGS.out)

  # Example read-outs: one synthetic MI page, and the real pages given.
  contrast_steps = int(loaded.config.saliency.get("contrast_steps", 32)) or 32
  page = synthetic_pages(loaded.config, 1)[0]
  explain.explain_pages(loaded.logit_fn, [page.page], os.path.join(FLAGS.out, "synthetic"),
                        method=default_method, value_range=loaded.config.data.value_range,
                        seed=FLAGS.seed, contrast_steps=contrast_steps,
                        **_explain_options(default_method))
  if real is not None:
    from ecgjax.data import ecg_images  # pylint: disable=g-import-not-at-top
    pages = []
    for path in FLAGS.real_pages:
      label = ecg_images.class_of_path(os.path.abspath(path))
      pages.append(pages_lib.page_from_file(path, real.config.data,
                                            label=None if label is None else class_index(label),
                                            dataset_config=real.config.dataset))
    method = default_method
    explain.explain_pages(real.logit_fn, pages, os.path.join(FLAGS.out, "real"), method=method,
                          value_range=real.config.data.value_range, seed=FLAGS.seed,
                          contrast_steps=contrast_steps, **_explain_options(method))
  print(text)
  print(f"Wrote {FLAGS.out}/explain_eval.md, explain_eval.json, sanity_cascade.png, "
        f"deletion_curves.png and example maps in {result['seconds']:.0f} s.")


def _explain_options(method: str) -> dict[str, Any]:
  options = method_options(method, (-1.0, 1.0))
  options.pop("baseline", None)  # explain_pages starts Integrated Gradients from a blank page.
  return options


def run() -> None:
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
