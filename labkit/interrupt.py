"""Interrupt a Ray Tune sweep on purpose, as Ctrl-C or Jupyter's stop button would: for the tuning
notebook's demo of `Tuner.restore`."""

import os
import signal

from ray import tune


class PressCtrlC(tune.Callback):
    """Send SIGINT to this process once, after the sweep's `results`-th result. Tune then stops its
    trials, saves the sweep's state and returns from `fit()`, as it does when you press Ctrl-C."""

    def __init__(self, results: int):
        self.results, self.seen = results, 0
        # Tune saves its callbacks with the sweep and Tuner.restore brings back a copy of this one, which
        # must not press again: the flag lives in the process's environment, where the copy sees it.
        self.pressed_flag = f"LAB_PRESSED_CTRL_C_{id(self)}_{os.getpid()}"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen += 1
        if self.seen >= self.results and self.pressed_flag not in os.environ:
            os.environ[self.pressed_flag] = "1"
            os.kill(os.getpid(), signal.SIGINT)
