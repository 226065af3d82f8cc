"""Ray's settings for a laptop: environment variables that Ray's processes read as they start.
`make bench-ray` measures what they save (the README has the figures).

LAPTOP is read by the processes `ray.init` starts, so the notebooks set it just before `ray.init`:
- RAY_prestart_worker_first_driver=0: when the first driver (a notebook's `ray.init`) connects, Ray
  starts one idle worker process per CPU, for tasks. Tune never uses them: each trial actor gets a
  runtime environment of its own (Tune sets environment variables for it), so Ray starts a fresh
  worker for it anyway, while the idle ones take the CPUs during `ray.init`. Measured here: `ray.init`
  2.3 s instead of 3.7 s. (Ray's worker niceness and `RAY_enable_worker_prestart` were tried too, and
  made no measurable difference: they are left as Ray sets them.)

TOKEN_AUTH is read as `import ray` runs, so it must be in the environment the notebook's kernel starts
with; `make lab`, the tests and the grader put it there:
- RAY_AUTH_MODE=token: Ray 2.60's token authentication (only processes that hold the token, in
  ~/.ray/auth_token, may use the cluster), which a local Ray turns on anyway, chosen explicitly, so
  that Ray does not print a notice about it at every start.

ENVIRONMENT is both: what the lab's tools add to the environment of the kernels and Ray clusters they
start.
"""

LAPTOP = {"RAY_prestart_worker_first_driver": "0"}
TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}
ENVIRONMENT = {**TOKEN_AUTH, **LAPTOP}
