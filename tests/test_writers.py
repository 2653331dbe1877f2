"""The run's progress output: the in-epoch progress bar on a terminal, none in a log file."""

import io

from ecgjax import writers


class Terminal(io.StringIO):

  def isatty(self):
    return True


def test_epoch_bar_draws_each_epoch_on_a_terminal_and_clears_it():
  stream = Terminal()
  bar = writers.EpochBar(steps_per_epoch=4, stream=stream, min_interval_s=0)
  for step in range(1, 7):  # Six steps: all of epoch 1, half of epoch 2.
    bar(step)
  text = stream.getvalue()
  assert "epoch 1" in text and "4/4" in text
  assert "epoch 2" in text and "2/4" in text and "3/4" not in text.split("epoch 2")[-1]
  assert bar._bar is not None  # pylint: disable=protected-access
  bar.close()


def test_epoch_bar_writes_nothing_into_a_log_file():
  stream = io.StringIO()
  bar = writers.EpochBar(steps_per_epoch=4, stream=stream, min_interval_s=0)
  for step in range(1, 9):
    bar(step)
  assert stream.getvalue() == ""


def test_epoch_bar_resumed_mid_epoch_counts_from_there():
  stream = Terminal()
  bar = writers.EpochBar(steps_per_epoch=10, stream=stream, min_interval_s=0)
  bar(7)  # A run resumed at step 6: its first step is the 7th of epoch 1.
  assert "epoch 1" in stream.getvalue() and "7/10" in stream.getvalue()
  bar.close()
