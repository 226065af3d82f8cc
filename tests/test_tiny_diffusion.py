"""labkit/tiny_diffusion.py as MLflow serves it, on a small untrained network (no notebook, no server):
saved as a model from code it holds its code and its weights as arrays, nothing pickled and nothing to
warn about; loaded back it draws the points the module draws, on the device where it is loaded, and it
refuses every table beyond its limits at once, saying what is allowed."""

import logging
import time
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from labkit import tiny_diffusion
from tools import REPO

CONFIG = {"schedule": "cosine", "timesteps": 20, "alpha_bar_end": 0.01, "hidden_size": 16, "depth": 1,
          "embedding": "sinusoidal", "lr": 1e-3}  # fmt: skip
T = CONFIG["timesteps"]


@pytest.fixture(scope="module")
def network():
    return tiny_diffusion.make_model(CONFIG, seed=3)


@pytest.fixture(scope="module")
def saved(network, tmp_path_factory):
    """The sampler saved from code, with every warning and MLflow log record that saving it raised."""
    folder = tmp_path_factory.mktemp("sampler")
    tiny_diffusion.save_weights(network, folder / "weights.npz")
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logging.getLogger("mlflow").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mlflow.pyfunc.save_model(
                folder / "model",
                python_model=str(REPO / "labkit" / "tiny_diffusion.py"),
                artifacts={"weights": str(folder / "weights.npz")},
                model_config=CONFIG,
                signature=tiny_diffusion.SIGNATURE,
                input_example=pd.DataFrame({"num_samples": [5], "seed": [0]}),
                pip_requirements=["torch"],
                metadata=tiny_diffusion.LIMITS,
            )
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    messages = [str(warning.message) for warning in caught] + [record.getMessage() for record in records]
    return folder / "model", messages


@pytest.fixture(scope="module")
def sampler(saved):
    threads = torch.get_num_threads()
    yield mlflow.pyfunc.load_model(str(saved[0]))
    torch.set_num_threads(threads)  # loading the sampler sets one thread for this process


def test_the_sampler_is_saved_from_code_with_nothing_pickled_and_no_warning_about_it(saved):
    path, messages = saved
    files = {p.relative_to(path).as_posix() for p in path.rglob("*")}
    assert {"tiny_diffusion.py", "artifacts/weights.npz"} <= files, files
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files
    flavor = mlflow.models.Model.load(path).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model", flavor
    assert not [m for m in messages if "pickle" in m.lower()], messages


def test_the_loaded_sampler_draws_what_the_module_draws_on_the_device_it_is_loaded_on(sampler, network):
    request = pd.DataFrame(
        {"num_samples": [30, 20], "seed": [4, 5], "sampler": ["ddpm", "ddim"], "steps": [T, 5]}
    )
    schedule = tiny_diffusion.Schedule(CONFIG)
    ddpm = tiny_diffusion.draw_samples(network, schedule, 30, seed=4)
    ddim = tiny_diffusion.draw_samples_ddim(network, schedule, 20, steps=5, seed=5)
    expected = torch.cat([ddpm, ddim])
    points = sampler.predict(request)
    assert points.dtype == np.float32 and points.shape == (50, 2)
    np.testing.assert_allclose(points, expected.numpy(), atol=1e-5)
    assert sampler.unwrap_python_model().device == tiny_diffusion.pick_device()
    assert sampler.metadata.metadata == tiny_diffusion.LIMITS


FIVE = {"num_samples": [5], "seed": [0]}
TOO_MANY_ROWS = tiny_diffusion.MAX_ROWS + 1
BAD_REQUESTS = {  # problem: (request, what the refusal must say)
    "an empty table": ({"num_samples": np.array([], int), "seed": np.array([], int)}, "the table is empty"),
    "too many rows": (
        {"num_samples": [1] * TOO_MANY_ROWS, "seed": range(TOO_MANY_ROWS)},
        f"at most {tiny_diffusion.MAX_ROWS} requests per table",
    ),
    "too many points": (
        {
            "num_samples": [tiny_diffusion.MAX_SAMPLES // 2 + 1] * 2,
            "seed": [0, 1],
            "sampler": ["ddim"] * 2,
            "steps": [1, 1],
        },
        f"at most {tiny_diffusion.MAX_SAMPLES} per table",
    ),  # fmt: skip
    "too much work": (
        {"num_samples": [tiny_diffusion.MAX_WORK // T + 1], "seed": [0]},
        f"at most {tiny_diffusion.MAX_WORK} per table",
    ),
    "0 samples": ({**FIVE, "num_samples": [0]}, "num_samples must be at least 1, not 0"),
    "an unknown sampler": ({**FIVE, "sampler": ["euler"]}, "sampler must be one of ddpm, ddim, not 'euler'"),
    "ddim with 0 steps": ({**FIVE, "sampler": ["ddim"], "steps": [0]}, f"steps must be from 1 to {T}"),
    "ddim with T+1 steps": ({**FIVE, "sampler": ["ddim"], "steps": [T + 1]}, f"steps must be from 1 to {T}"),
    "ddpm with fewer steps": ({**FIVE, "steps": [T - 1]}, f"steps must be {T} (all) for ddpm"),
}


@pytest.mark.parametrize("problem", list(BAD_REQUESTS))
def test_the_sampler_refuses_what_is_out_of_bounds_at_once_saying_what_is_allowed(sampler, problem):
    request, message = BAD_REQUESTS[problem]
    started = time.monotonic()
    with pytest.raises(MlflowException) as refused:
        sampler.predict(pd.DataFrame(request))
    assert message in refused.value.message, refused.value.message
    assert time.monotonic() - started < 1, f"refusing {problem} took its time: did the sampler draw first?"
