"""The one MLflow layer. Torch-free at package level, so that analysis can use it."""
