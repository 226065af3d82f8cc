"""The champion sampler of diffusion.ipynb served over HTTP with `mlflow models serve`, as a user would:
it draws the points it draws in Python, and it refuses what it cannot afford (HTTP 400, a message that
says what is allowed, no stack trace) without keeping the server from answering the next request."""

import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.serving import invoke, served

MODEL_URI = "models:/tiny-diffusion@champion"
SMALL_REQUEST = {"dataframe_records": [{"num_samples": 10, "seed": 0, "sampler": "ddim", "steps": 5}]}
pytestmark = pytest.mark.slow  # a run of the notebook and `mlflow models serve`


@pytest.fixture(scope="module")
def sampler_server(notebook_ran, tmp_path_factory):
    """`mlflow models serve` for the champion sampler."""
    notebook_ran("diffusion.ipynb", "diffusion-lab")
    with served(MODEL_URI, tmp_path_factory.mktemp("serve")) as url:
        yield url


@pytest.fixture(scope="module")
def contract(sampler_server) -> dict:
    """The served model's limits (its metadata) and its number of steps T."""
    sampler = mlflow.pyfunc.load_model(MODEL_URI)
    return {**sampler.metadata.metadata, "timesteps": sampler.model_config["timesteps"]}


def timed_invoke(url: str, body: dict) -> tuple[int, dict, float]:
    started = time.monotonic()
    status, answer = invoke(url, body)
    return status, answer, time.monotonic() - started


@pytest.mark.parametrize(
    "records",
    [
        [{"num_samples": 200, "seed": 0}, {"num_samples": 100, "seed": 1}],
        [{"num_samples": 100, "seed": 2, "sampler": "ddim", "steps": 10}],
    ],
    ids=["ddpm", "ddim"],
)
def test_the_served_champion_draws_the_points_it_draws_in_python(sampler_server, records):
    status, answer = invoke(sampler_server, {"dataframe_records": records})
    assert status == 200, answer
    points = np.array(answer["predictions"])
    assert points.shape == (sum(record["num_samples"] for record in records), 2)
    in_python = mlflow.pyfunc.load_model(MODEL_URI).predict(pd.DataFrame(records))
    np.testing.assert_allclose(points, in_python, atol=1e-5)


def too_many_rows(limits: dict) -> dict:
    rows = limits["max_rows"] + 1
    return {"dataframe_records": [{"num_samples": 1, "seed": seed} for seed in range(rows)]}


def too_many_points(limits: dict) -> dict:
    half = limits["max_samples"] // 2 + 1
    return {"dataframe_records": [{"num_samples": half, "seed": seed, "sampler": "ddim", "steps": 1}
                                  for seed in (0, 1)]}  # fmt: skip


def too_much_work(limits: dict) -> dict:
    """Rows each within bounds, that ask for more network evaluations together than the budget."""
    rows = 4
    per_row = limits["max_work"] // (rows * limits["timesteps"]) + 1
    return {"dataframe_records": [{"num_samples": per_row, "seed": seed} for seed in range(rows)]}


BAD_REQUESTS = {  # name: (request from the contract, what the refusal must say)
    "empty table": (lambda limits: {"dataframe_split": {"columns": ["num_samples", "seed"], "data": []}},
                    "the table is empty"),  # fmt: skip
    "no records": (lambda limits: {"dataframe_records": []}, "num_samples"),
    "too many rows": (too_many_rows, "at most {max_rows} requests per table"),
    "too many points": (too_many_points, "at most {max_samples} per table"),
    "too much work": (too_much_work, "at most {max_work} per table"),
    "zero samples": (lambda limits: {"dataframe_records": [{"num_samples": 0, "seed": 0}]},
                     "num_samples must be at least 1, not 0"),  # fmt: skip
}


@pytest.mark.parametrize("problem", list(BAD_REQUESTS))
def test_the_served_champion_refuses_what_it_cannot_afford_and_answers_the_next_request(
    sampler_server, contract, problem
):
    make_request, message = BAD_REQUESTS[problem]
    status, answer, seconds = timed_invoke(sampler_server, make_request(contract))
    assert status == 400, answer
    assert message.format(**contract) in answer["message"], answer["message"]
    assert "stack_trace" not in answer and "Traceback" not in answer["message"], answer
    assert seconds < 1, f"refusing a request with {problem} took {seconds:.1f} s"
    status, answer, seconds = timed_invoke(sampler_server, SMALL_REQUEST)
    assert status == 200, answer
    assert seconds < 1, f"after refusing a request with {problem}, a small request took {seconds:.1f} s"


def test_the_served_champion_answers_a_request_at_the_full_budget(sampler_server, contract):
    """The most work the sampler accepts, half DDPM and half DDIM, comes back within the scoring server's
    timeout (no 504) with every point."""
    timesteps, budget = contract["timesteps"], contract["max_work"]
    records = [{"num_samples": budget // (2 * timesteps), "seed": 0, "sampler": "ddpm", "steps": timesteps},
               {"num_samples": budget // 20, "seed": 1, "sampler": "ddim", "steps": 10}]  # fmt: skip
    assert sum(record["num_samples"] * record["steps"] for record in records) <= budget
    status, answer = invoke(sampler_server, {"dataframe_records": records})
    assert status == 200, answer
    assert len(answer["predictions"]) == sum(record["num_samples"] for record in records)
