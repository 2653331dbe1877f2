"""Where a run's metrics go: clu's writers when TensorFlow is installed, the log alone when not.

clu's `metric_writers` (and `periodic_actions`, which imports them) import TensorFlow for the
TensorBoard summary writer, so TensorFlow is an extra (`pip install -e ".[tensorboard]"`), not a
need: without it a run writes the same scalars, hyperparameters and steps/s to the log through the
same calls, and says once that TensorBoard summaries are off.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from absl import logging

try:
  from clu import metric_writers
  from clu import periodic_actions
  _NO_CLU_WRITERS = None
except ImportError as e:  # TensorFlow is missing (clu.metric_writers imports it).
  metric_writers = periodic_actions = None
  _NO_CLU_WRITERS = str(e)


class LogWriter:
  """clu's `LoggingWriter` calls for a run without TensorFlow: every value goes to the log, at
  debug level as clu's lines are (`--verbosity=1` shows them; the epoch lines always show)."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    logging.debug("[%d] %s", step, ", ".join(f"{k}={float(v):.6g}" for k, v in scalars.items()))

  def write_hparams(self, hparams: Mapping[str, Any]):
    logging.debug("[Hyperparameters] %s", dict(hparams))

  def flush(self):
    pass

  def close(self):
    pass


class StepsPerSecond:
  """clu's `ReportProgress` for a run without TensorFlow: steps/s every `every_steps` steps."""

  def __init__(self, writer: LogWriter, every_steps: int):
    self.writer, self.every_steps = writer, int(every_steps)
    self._last: tuple[int, float] | None = None

  def __call__(self, step: int):
    if step % self.every_steps:
      return
    now = time.perf_counter()
    if self._last is not None and step > self._last[0]:
      self.writer.write_scalars(step, {"steps_per_sec": (step - self._last[0]) / (now - self._last[1])})
    self._last = (step, now)


def create(workdir: str, *, just_logging: bool):
  """clu's default writer (TensorBoard in `workdir` and the log), or the log alone."""
  if metric_writers is not None:
    return metric_writers.create_default_writer(workdir, just_logging=just_logging)
  if not just_logging:
    logging.info("No TensorBoard summaries (%s): install ecgjax[tensorboard] for them; metrics go "
                 "to the log.", _NO_CLU_WRITERS)
  return LogWriter()


class EpochBar:
  """A terminal progress bar of the steps of the current epoch, with its rate and remaining time
  (tqdm), called with each step. Drawn on stderr only when that is a terminal, and cleared at the
  epoch's end, where the trainer logs the epoch's line; logs redirected to a file get no bar."""

  def __init__(self, steps_per_epoch: int, stream=None, min_interval_s: float = 0.1):
    self.steps_per_epoch = int(steps_per_epoch)
    self.min_interval_s = min_interval_s  # Redraws at most this often.
    self.stream = stream if stream is not None else sys.stderr
    self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
    self._bar = None

  def __call__(self, step: int):
    if not self.enabled:
      return
    done = (step - 1) % self.steps_per_epoch + 1
    if self._bar is None:
      import tqdm  # pylint: disable=g-import-not-at-top  # Only on a terminal.
      self._bar = tqdm.tqdm(total=self.steps_per_epoch, initial=done - 1, leave=False,
                            file=self.stream, unit="step", dynamic_ncols=True,
                            mininterval=self.min_interval_s, miniters=1,
                            desc=f"epoch {(step - 1) // self.steps_per_epoch + 1}")
    self._bar.update(1)
    if done == self.steps_per_epoch:
      self.close()

  def close(self):
    if self._bar is not None:
      self._bar.close()
      self._bar = None


def progress(writer, *, num_train_steps: int, every_steps: int):
  """A hook called with each step that reports steps/s (and the remaining time with clu)."""
  if periodic_actions is not None:
    return periodic_actions.ReportProgress(num_train_steps=num_train_steps, writer=writer,
                                           every_steps=every_steps)
  return StepsPerSecond(writer, every_steps)
