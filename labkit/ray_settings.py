"""Ray's settings for a laptop: environment variables that Ray's processes read when they start. The
notebooks set them before `ray.init`, the tests' shared cluster and the README's `ray start` commands
use them too. `make bench-ray` measures what they save (the README has the figures).

- RAY_AUTH_MODE=token: Ray 2.60's token authentication, which a local Ray turns on anyway, chosen
  explicitly, so that Ray does not print a notice about it at every start.
- RAY_worker_niceness=0: Ray starts its worker processes at niceness 15, below everything else on the
  machine; on a laptop that runs a notebook, the trials are the work, so they run at normal priority.
- RAY_enable_worker_prestart=0: Ray starts one idle worker process per CPU as it starts, for tasks.
  Tune never uses them: each trial actor gets a runtime environment of its own (Tune sets environment
  variables for it), so Ray starts a fresh worker for it anyway, while the idle ones take CPU time
  during `ray.init`.
"""

LAPTOP = {
    "RAY_AUTH_MODE": "token",
    "RAY_worker_niceness": "0",
    "RAY_enable_worker_prestart": "0",
}
