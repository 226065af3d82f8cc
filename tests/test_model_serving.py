"""The champion that mlflow_tracking.ipynb registers answers like a classifier behind
`mlflow models serve`, asked over HTTP as any client would."""

import os

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.serving import invoke, served

MODEL_URI = "models:/digits-classifier@champion"
MIN_ACCURACY = 0.8 if os.environ.get("SMOKE_TEST") == "1" else 0.97


@pytest.fixture(scope="module")
def scoring_server(notebook_ran, tmp_path_factory):
    """`mlflow models serve` for the champion, as the notebook shows it."""
    notebook_ran("mlflow_tracking.ipynb", "mlflow-tracking-lab")
    with served(MODEL_URI, tmp_path_factory.mktemp("serve")) as url:
        yield url


def test_served_champion_answers_with_digits_and_probabilities(scoring_server):
    digits = load_digits()
    images, labels = digits.data[:50] / 16.0, digits.target[:50]
    status, answer = invoke(scoring_server, {"inputs": images.tolist()})
    assert status == 200, answer
    predictions = answer["predictions"]
    assert len(predictions) == len(labels)
    for prediction in predictions:
        assert set(prediction) == {"digit", "probabilities"}, prediction
        assert len(prediction["probabilities"]) == 10
        assert sum(prediction["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert prediction["digit"] == int(np.argmax(prediction["probabilities"]))
    assert np.mean([p["digit"] for p in predictions] == labels) >= MIN_ACCURACY


def test_served_champion_rejects_input_that_breaks_its_signature(scoring_server):
    status, answer = invoke(scoring_server, {"inputs": [[0.0] * 63]})  # 63 pixels, not 64
    assert status == 400, answer
    assert "shape" in answer["message"].lower(), answer
