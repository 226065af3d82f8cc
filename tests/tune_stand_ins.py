"""Stand-ins for what Ray Tune hands a callback, so that tests can drive the lab's trial loggers
(labkit/trial_logger.py) directly, as Tune would, without Ray."""

from collections import Counter


class StandInTrial:
    """What the loggers use of a Tune trial: its id, config, name and last result."""

    def __init__(self, trial_id: str, **config):
        self.trial_id, self.config, self.last_result = trial_id, config, {}

    def __str__(self):
        return f"trainable_{self.trial_id}"


def result(epoch: int, **metrics) -> dict:
    """A Tune result as callbacks see it (epoch from 0): the trainable's metrics among Tune's bookkeeping."""
    return {
        **metrics, "training_iteration": epoch + 1, "time_this_iter_s": 0.01, "time_total_s": 0.1,
        "timestamp": 1_800_000_000, "done": False, "trial_id": "t", "date": "2026-11-27_10-00-00",
    }  # fmt: skip


class CountingClient:
    """Passes calls on to an MlflowClient and counts them: the logger's requests to the server."""

    def __init__(self, client):
        self.client, self.calls = client, Counter()

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted
