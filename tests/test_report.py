"""The evaluation report, checked against definitions recomputed from its own confusion matrix."""

import json
import os

import numpy as np

from ecgjax import report


def test_report_metrics_agree_with_confusion_matrix():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 200)
  logits = rng.normal(size=(200, 4)) + 2.0 * np.eye(4)[labels] * (rng.random(200) < 0.6)[:, None]
  rep = report.classification_report(labels, logits)
  cm = np.asarray(rep["confusion_matrix"])
  assert cm.sum() == 200
  np.testing.assert_array_equal(cm.sum(1), np.bincount(labels, minlength=4))
  assert rep["accuracy"] == np.trace(cm) / cm.sum()
  recall = np.diag(cm) / cm.sum(1)
  precision = np.diag(cm) / cm.sum(0)
  f1 = 2 * precision * recall / (precision + recall)
  assert np.isclose(rep["balanced_accuracy"], recall.mean())
  assert np.isclose(rep["macro_f1"], f1.mean())
  for i, name in enumerate(rep["class_names"]):
    assert np.isclose(rep["per_class"][name]["f1"], f1[i])
    assert 0.5 < rep["per_class"][name]["roc_auc"] <= 1.0  # Informative logits.


def test_perfect_and_absent_classes():
  labels = np.array([0, 0, 1, 3])
  logits = np.eye(4)[labels] * 5.0
  rep = report.classification_report(labels, logits)
  assert rep["accuracy"] == 1.0 and rep["balanced_accuracy"] == 1.0
  assert rep["per_class"]["mi"]["support"] == 0
  assert rep["per_class"]["mi"]["roc_auc"] is None  # Undefined, not invented.
  assert rep["per_class"]["normal"]["roc_auc"] == 1.0


def test_write_creates_json_and_png(tmp_path):
  labels = np.arange(8) % 4
  rep = report.classification_report(labels, np.random.default_rng(1).normal(size=(8, 4)))
  paths = report.write(rep, str(tmp_path / "eval"))
  with open(paths["report"]) as f:
    assert json.load(f)["confusion_matrix"] == rep["confusion_matrix"]
  with open(paths["confusion_matrix"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(paths["confusion_matrix"]) > 5000
