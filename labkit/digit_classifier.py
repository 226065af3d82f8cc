"""The digits classifier: its network, and the model MLflow loads and serves (a model from code).

`mlflow.pyfunc.log_model(python_model="labkit/digit_classifier.py", artifacts={"weights": ...},
model_config={"hidden_size": ...})` stores this file as the model's code, and the trained weights as
an artifact: plain arrays in a NumPy .npz file, nothing pickled. Loading the model runs this file,
then `load_context`, which rebuilds the network and loads the weights into it.

The contract (the model's signature says the same):
    input   a float32 array of shape (n, 64): n images of 8x8 pixels, scaled to 0..1, row by row
    output  one row per image: `digit` (int), the most probable digit, and `probabilities`
            (ten floats that sum to 1), the probability of each digit 0..9
"""

import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn


def make_model(hidden_size: int, dropout: float = 0.0) -> nn.Module:
    """An MLP: the 64 pixels of an image in, two hidden layers, ten scores (logits) out, one per digit."""
    return nn.Sequential(
        nn.Linear(64, hidden_size), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden_size, 10),
    )  # fmt: skip


class DigitClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        weights = np.load(context.artifacts["weights"])  # refuses pickled content
        self.network = make_model(context.model_config["hidden_size"])
        self.network.load_state_dict({name: torch.from_numpy(weights[name]) for name in weights.files})
        self.network.eval()

    def predict(self, model_input: np.ndarray, params=None) -> pd.DataFrame:
        with torch.no_grad():
            logits = self.network(torch.tensor(model_input, dtype=torch.float32))
        probabilities = torch.softmax(logits, dim=1).numpy()
        return pd.DataFrame({"digit": probabilities.argmax(1), "probabilities": list(probabilities)})


mlflow.models.set_model(DigitClassifier())
