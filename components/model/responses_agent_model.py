"""The models-from-code file of the registered chat model: MLflow copies it into the logged model and runs
it on `mlflow.pyfunc.load_model`; `load_context` then loads the model directory from the artifacts."""

import mlflow

from components.model.responses_agent import GPTRecipeAgent

mlflow.models.set_model(GPTRecipeAgent())
