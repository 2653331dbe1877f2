"""The four diagnostic classes, in the one label order used everywhere (data, models, reports)."""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("abnormal_heartbeat", "history_of_mi", "mi", "normal")
NUM_CLASSES = len(CLASS_NAMES)


def class_index(label: int | str) -> int:
  """Returns the index of `label`, given as an index or a class name."""
  if isinstance(label, str):
    if label not in CLASS_NAMES:
      raise ValueError(f"Unknown class name {label!r}; expected one of {CLASS_NAMES}.")
    return CLASS_NAMES.index(label)
  index = int(label)
  if not 0 <= index < NUM_CLASSES:
    raise ValueError(f"Class index {label!r} out of range; expected 0..{NUM_CLASSES - 1}.")
  return index
