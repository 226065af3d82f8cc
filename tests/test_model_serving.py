"""The champion that mlflow_tracking.ipynb registers, behind `mlflow models serve`, asked over HTTP as
any client would. Its contract: {"inputs": [[64 pixels in 0..1], ...]} in, one {"digit", "probabilities"}
per image out."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.runs import find_runs
from tests.serving import invoke, served

MODEL_URI = "models:/digits-classifier@champion"
pytestmark = pytest.mark.slow  # runs the notebook (unless an earlier test did) and `mlflow models serve`


@pytest.fixture(scope="module")
def experiment(notebook_ran):
    return notebook_ran("mlflow_tracking.ipynb", "mlflow-tracking-lab")


@pytest.fixture(scope="module")
def scoring_server(experiment, tmp_path_factory):
    """`mlflow models serve` for the champion, as the notebook shows it."""
    with served(MODEL_URI, tmp_path_factory.mktemp("serve")) as url:
        yield url


@pytest.fixture(scope="module")
def images():
    """Digits as a client has them: float64 pixels scaled to 0..1, and their labels."""
    digits = load_digits()
    return digits.data[:100] / 16.0, digits.target[:100]


def accuracy_floor(client, experiment) -> float:
    """What the champion gate demands of every champion on the validation set, as the gate logged it."""
    gates = find_runs(client, experiment, "tags.verdict = 'passed'")
    return float(max(gates, key=lambda run: run.info.start_time).data.params["accuracy_score.threshold"])


def test_served_champion_answers_with_digits_and_probabilities(client, experiment, scoring_server, images):
    pixels, labels = images
    status, answer = invoke(scoring_server, {"inputs": pixels.tolist()})
    assert status == 200, answer
    predictions = answer["predictions"]
    assert len(predictions) == len(labels)
    for prediction in predictions:
        assert set(prediction) == {"digit", "probabilities"}, prediction
        assert len(prediction["probabilities"]) == 10
        assert sum(prediction["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert prediction["digit"] == int(np.argmax(prediction["probabilities"]))
    assert np.mean([p["digit"] for p in predictions] == labels) >= accuracy_floor(client, experiment)


def test_served_champion_is_the_registered_one(scoring_server, images):
    pixels, _ = images
    _, answer = invoke(scoring_server, {"inputs": pixels[:20].tolist()})
    local = mlflow.pyfunc.load_model(MODEL_URI).predict(pixels[:20].astype(np.float32))
    assert [p["digit"] for p in answer["predictions"]] == local["digit"].tolist()
    np.testing.assert_allclose(
        [p["probabilities"] for p in answer["predictions"]], np.stack(local["probabilities"]), atol=1e-6
    )


def test_served_champion_reads_the_instances_format_too(scoring_server, images):
    pixels, _ = images
    _, as_inputs = invoke(scoring_server, {"inputs": pixels[:5].tolist()})
    status, as_instances = invoke(scoring_server, {"instances": pixels[:5].tolist()})
    assert status == 200, as_instances
    assert as_instances == as_inputs


def test_served_champion_answers_one_image(scoring_server, images):
    pixels, _ = images
    status, answer = invoke(scoring_server, {"inputs": pixels[:1].tolist()})
    assert status == 200, answer
    assert len(answer["predictions"]) == 1


def test_served_champion_answers_its_own_serving_example(scoring_server):
    model_folder = Path(mlflow.artifacts.download_artifacts(MODEL_URI))
    body = json.loads((model_folder / "serving_input_example.json").read_text())
    status, answer = invoke(scoring_server, body)
    assert status == 200, answer
    assert len(answer["predictions"]) == len(body["inputs"])


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"inputs": [[0.0] * 63]}, "shape"),  # 63 pixels, not 64
        ({"inputs": [["dark"] * 64]}, ""),  # not numbers
        ({"pixels": [[0.0] * 64]}, ""),  # not MLflow's request format
    ],
)
def test_served_champion_rejects_what_its_signature_does_not_describe(scoring_server, body, says):
    status, answer = invoke(scoring_server, body)
    assert status == 400, answer
    assert says in answer["message"].lower(), answer
