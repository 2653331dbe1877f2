"""The evaluation report: classification metrics from logits, as JSON and a confusion-matrix plot.

scikit-learn computes the metrics, so their definitions are the field's standard ones; nothing here
runs on the accelerator.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn import metrics as skm

from ecgjax.classes import CLASS_NAMES


def classification_report(labels: np.ndarray, logits: np.ndarray,
                          class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
  """Accuracy, balanced accuracy, macro-F1, per-class P/R/F1/support, confusion matrix, ROC-AUC."""
  labels = np.asarray(labels)
  probs = softmax(np.asarray(logits, np.float64), axis=-1)
  preds = probs.argmax(-1)
  ids = list(range(len(class_names)))
  precision, recall, f1, support = skm.precision_recall_fscore_support(
      labels, preds, labels=ids, zero_division=0)
  auc = {}
  for i, name in enumerate(class_names):
    positives = labels == i
    # One-vs-rest AUC is undefined when a class is absent or is everything.
    auc[name] = (float(skm.roc_auc_score(positives, probs[:, i]))
                 if 0 < positives.sum() < len(labels) else None)
  defined = [v for v in auc.values() if v is not None]
  present = np.unique(labels)
  return {
      "num_examples": int(len(labels)),
      "accuracy": float(skm.accuracy_score(labels, preds)),
      "balanced_accuracy": float(recall[present].mean()) if len(present) else 0.0,
      "macro_f1": float(skm.f1_score(labels, preds, labels=ids, average="macro", zero_division=0)),
      "per_class": {
          name: {"precision": float(precision[i]), "recall": float(recall[i]),
                 "f1": float(f1[i]), "support": int(support[i]), "roc_auc": auc[name]}
          for i, name in enumerate(class_names)
      },
      "macro_roc_auc": float(np.mean(defined)) if defined else None,
      "class_names": list(class_names),
      # Rows: true class; columns: predicted class.
      "confusion_matrix": skm.confusion_matrix(labels, preds, labels=ids).tolist(),
  }


def plot_confusion_matrix(report: dict[str, Any], path: str, title: str = "") -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cm = np.asarray(report["confusion_matrix"])
  names = report["class_names"]
  fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
  rows = cm.sum(1, keepdims=True)
  ax.imshow(cm / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
  for i in range(cm.shape[0]):
    for j in range(cm.shape[1]):
      frac = cm[i, j] / max(rows[i, 0], 1)
      ax.text(j, i, f"{cm[i, j]}\n{frac:.0%}", ha="center", va="center",
              color="white" if frac > 0.5 else "black", fontsize=9)
  ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
  ax.set_yticks(range(len(names)), names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title or f"macro-F1 {report['macro_f1']:.3f}, accuracy {report['accuracy']:.3f}")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


# A run's per-page test predictions (RUN/eval/predictions.csv): these columns, one row per page.
PROBABILITY_COLUMNS = tuple(f"p_{name}" for name in CLASS_NAMES)


def prediction_row(source_path: str, true_class: str, probabilities: Sequence[float]
                   ) -> dict[str, Any]:
  """One page's row of predictions.csv: its path, true and predicted class, the probabilities."""
  return {"source_path": source_path, "true_class": true_class,
          "predicted_class": CLASS_NAMES[int(np.argmax(probabilities))],
          **{c: float(p) for c, p in zip(PROBABILITY_COLUMNS, probabilities)}}


def write_rows(rows: Sequence[dict[str, Any]], path: str) -> str:
  """Writes `rows` (dicts with the same keys) as a CSV file at `path`; returns the path."""
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


def write(report: dict[str, Any], out_dir: str, title: str = "") -> dict[str, str]:
  """Writes report.json and confusion_matrix.png into `out_dir`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"report": os.path.join(out_dir, "report.json"),
           "confusion_matrix": os.path.join(out_dir, "confusion_matrix.png")}
  with open(paths["report"], "w") as f:
    json.dump(report, f, indent=2)
  plot_confusion_matrix(report, paths["confusion_matrix"], title)
  return paths
