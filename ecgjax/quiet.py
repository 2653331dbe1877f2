"""What the command-line tools print: ecgjax's own lines, warnings and errors, not libraries' INFO.

orbax, TFDS and clu log through the same absl logger as ecgjax, over 200 INFO lines for one smoke
run (each checkpoint's handlers, threads and renames). `hide_library_info()` keeps an INFO line only
when it comes from ecgjax's own modules; warnings and errors from anywhere still show. absl's
`--verbosity=1` (or higher) shows everything again, the per-step metric lines included.
"""

from __future__ import annotations

import logging as std_logging
import os

from absl import flags
from absl import logging

_ECGJAX = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _OwnInfoOnly(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    if flags.FLAGS["verbosity"].value > 0 or os.path.abspath(record.pathname).startswith(_ECGJAX):
      return True
    if record.levelno >= std_logging.WARNING:
      # orbax warns at every checkpoint saved between epochs, which carries no validation metric
      # by design (the best-checkpoint policy only ranks the epochs' checkpoints).
      return not str(record.msg).startswith("Requested `tracked_metric`; did not provide metrics")
    return False


def hide_library_info() -> None:
  """Installs the filter on absl's handler and turns TFDS's progress bars off (call after flags
  are parsed, from a command-line entry point)."""
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
