"""TensorLLM: multi-head tensorisation + shared-factor Tucker decomposition of attention weights.

The library is plain torch/transformers: no Prefect, Ray or MLflow import here
(the one exception is ``tensorllm.registry``, the only module that imports mlflow).
"""

__version__ = "0.1.0"
