"""The digits classifier as MLflow loads and serves it: a model from code.

`mlflow.pyfunc.log_model(python_model="labkit/digit_classifier.py", artifacts={"network": ...})`
stores this file as the model's code and the trained network (a `torch.export` program, .pt2) as an
artifact: nothing is pickled. Loading the model runs this file, then `load_context`.

The contract (the model's signature says the same):
    input   a float32 array of shape (n, 64): n images of 8x8 pixels, scaled to 0..1, row by row
    output  one row per image: `digit` (int), the most probable digit, and `probabilities`
            (ten floats that sum to 1), the probability of each digit 0..9
"""

import mlflow
import numpy as np
import pandas as pd
import torch


class DigitClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.network = torch.export.load(context.artifacts["network"]).module()

    def predict(self, model_input: np.ndarray, params=None) -> pd.DataFrame:
        with torch.no_grad():
            logits = self.network(torch.tensor(model_input, dtype=torch.float32))
        probabilities = torch.softmax(logits, dim=1).numpy()
        return pd.DataFrame({"digit": probabilities.argmax(1), "probabilities": list(probabilities)})


mlflow.models.set_model(DigitClassifier())
