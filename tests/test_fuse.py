"""experiments/fuse.py: runs fused offline from their predictions.csv files as `train_and_evaluate`
writes them (`report.write_rows`), and checked against the fused model's own 'mean_probs'."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import report as report_lib
from ecgjax.classes import CLASS_NAMES
from ecgjax.models import fusion
from experiments import fuse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [f"folder/page{i}.jpg" for i in range(12)]
TRUTH = [CLASS_NAMES[i % 4] for i in range(12)]


def _run(arm_dir, name, logits, order=None, truth=TRUTH, checkpoint=None):
  """A run's eval/predictions.csv and config.json, its rows in `order` (default: as PAGES); with
  `checkpoint`, a validation fold and the report.json of a run that reported that checkpoint."""
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  order = range(len(PAGES)) if order is None else order
  rows = [{"source_path": PAGES[i], "true_class": truth[i],
           "predicted_class": CLASS_NAMES[int(probs[i].argmax())],
           **{f"p_{c}": float(p) for c, p in zip(CLASS_NAMES, probs[i])}} for i in order]
  os.makedirs(os.path.join(arm_dir, name, "eval"))
  report_lib.write_rows(rows, os.path.join(arm_dir, name, "eval", "predictions.csv"))
  with open(os.path.join(arm_dir, name, "config.json"), "w") as f:
    json.dump({"data": {"val_fold": None if checkpoint is None else 1, "test_fold": 0}}, f)
  if checkpoint is not None:
    with open(os.path.join(arm_dir, name, "eval", "report.json"), "w") as f:
      json.dump({"checkpoint": checkpoint}, f)


def test_fused_runs_are_the_fused_models_mean_probs(tmp_path):
  rng = np.random.default_rng(0)
  logits = [rng.normal(0, 2, (len(PAGES), 4)) for _ in range(3)]
  arms = [str(tmp_path / "abl" / a) for a in ("cnn", "mobilenet_v2", "vgg16")]
  for arm, lg in zip(arms, logits):
    _run(arm, "seed0_fold0", lg, order=rng.permutation(len(PAGES)))  # Rows in any order.
  _run(arms[0], "seed1_fold0", logits[0])  # Only one arm has it: not fused.
  rows = fuse.fuse(arms, str(tmp_path / "fused"))
  assert [r["runs"] for r in rows] == [1] and not (tmp_path / "fused" / "seed1_fold0").exists()
  out = tmp_path / "fused" / "seed0_fold0"
  pages, truth, probs = fuse.read_predictions(str(out / "eval" / "predictions.csv"))
  order = [pages.index(p) for p in PAGES]
  probs = probs[order]
  assert [truth[i] for i in order] == TRUTH
  # The fused model's own 'mean_probs' head on the same logits gives the same probabilities.
  reference = np.exp(np.asarray(fusion.mean_probs([jnp.asarray(lg, jnp.float32) for lg in logits])))
  np.testing.assert_allclose(probs, reference, rtol=1e-5, atol=1e-7)
  with open(out / "eval" / "report.json") as f:
    report = json.load(f)
  preds = reference.argmax(-1)
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  labels = np.array([CLASS_NAMES.index(t) for t in TRUTH])
  assert report["macro_f1"] == pytest.approx(
      skm.f1_score(labels, preds, labels=range(4), average="macro", zero_division=0))
  assert report["num_examples"] == len(PAGES)
  with open(out / "config.json") as f:
    config = json.load(f)
  assert config["fused_offline"]["runs"] == [os.path.join(a, "seed0_fold0") for a in arms]
  table = (tmp_path / "fused" / "results.md").read_text()
  assert f"| fused | 1 | latest | {report['accuracy']:.3f} +- 0.000 |" in table
  assert (out / "eval" / "confusion_matrix.png").stat().st_size > 5000


def test_the_table_names_the_checkpoints_the_fused_runs_reported(tmp_path):
  # Runs with a validation fold that reported their last checkpoint (the signal model's recipe),
  # e.g. seeds of one config fused: the fused row says 'latest', not 'best'.
  rng = np.random.default_rng(1)
  arms = [str(tmp_path / f"seed{s}") for s in range(2)]
  for arm in arms:
    _run(arm, "seed0_fold0", rng.normal(0, 2, (len(PAGES), 4)), checkpoint="latest")
  fuse.fuse(arms, str(tmp_path / "fused"))
  assert "| fused | 1 | latest |" in (tmp_path / "fused" / "results.md").read_text()
  _run(arms[0], "seed0_fold1", rng.normal(0, 2, (len(PAGES), 4)), checkpoint="best")
  _run(arms[1], "seed0_fold1", rng.normal(0, 2, (len(PAGES), 4)), checkpoint="latest")
  fuse.fuse(arms, str(tmp_path / "mixed"))
  assert "| mixed | 2 | best/latest |" in (tmp_path / "mixed" / "results.md").read_text()


def test_seeds_of_one_arm_averaged_fold_by_fold(tmp_path):
  rng = np.random.default_rng(2)
  arm = str(tmp_path / "signals")
  logits = {(s, f): rng.normal(0, 2, (len(PAGES), 4)) for s in range(3) for f in range(2)}
  for (s, f), lg in logits.items():
    if (s, f) != (2, 1):  # Seed 2 lacks fold 1: only seeds 0 and 1 are averaged.
      _run(arm, f"seed{s}_fold{f}", lg, order=rng.permutation(len(PAGES)), checkpoint="latest")
  rows = fuse.fuse_seeds(arm, str(tmp_path / "seeds"))
  assert [(r["runs"], r["checkpoint"]) for r in rows] == [(2, "latest")]
  for f in range(2):
    pages, _, probs = fuse.read_predictions(str(tmp_path / "seeds" / f"fold{f}" / "eval" /
                                                 "predictions.csv"))
    probs = probs[[pages.index(p) for p in PAGES]]
    expected = np.mean([np.exp(logits[s, f]) / np.exp(logits[s, f]).sum(-1, keepdims=True)
                        for s in (0, 1)], axis=0)
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
  result = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "fuse.py"), "--seeds",
                           str(tmp_path / "seeds" / "fold0"), f"--out={tmp_path / 'again'}"],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 1 and "fewer than two seeds" in result.stderr


def test_refuses_other_pages_labels_or_no_runs(tmp_path):
  rng = np.random.default_rng(1)
  a, b, c, empty = (str(tmp_path / n) for n in ("a", "b", "c", "empty"))
  _run(a, "seed0_fold0", rng.normal(size=(12, 4)))
  _run(b, "seed0_fold0", rng.normal(size=(12, 4)), truth=TRUTH[1:] + TRUTH[:1])
  _run(c, "seed0_fold0", rng.normal(size=(12, 4)), order=range(11))
  os.makedirs(empty)
  with pytest.raises(fuse.FuseError, match="disagree on a page's label"):
    fuse.fuse([a, b], str(tmp_path / "out"))
  with pytest.raises(fuse.FuseError, match="tested different pages"):
    fuse.fuse([a, c], str(tmp_path / "out"))
  with pytest.raises(fuse.FuseError, match=f"{empty}: no runs with eval/predictions.csv"):
    fuse.fuse([a, empty], str(tmp_path / "out"))
  # The command line says it in one line and exits 1.
  out = subprocess.run([sys.executable, "experiments/fuse.py", a, b, f"--out={tmp_path / 'o'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("fuse.py: ")
  assert "disagree on a page's label" in out.stderr
