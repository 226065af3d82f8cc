"""The champion sampler of diffusion.ipynb served over HTTP with `mlflow models serve`, as a user would."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.serving import invoke, served

MODEL_URI = "models:/tiny-diffusion@champion"


@pytest.fixture(scope="module")
def sampler_server(notebook_ran, tmp_path_factory):
    """`mlflow models serve` for the champion sampler."""
    notebook_ran("diffusion.ipynb", "diffusion-lab")
    with served(MODEL_URI, tmp_path_factory.mktemp("serve")) as url:
        yield url


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


def test_the_served_champion_answers_a_bad_request_with_what_is_allowed(sampler_server):
    status, answer = invoke(sampler_server, {"dataframe_records": [{"num_samples": 0, "seed": 0}]})
    assert status == 400, answer
    assert "num_samples must be 1 to 100000, not 0" in answer["message"], answer
