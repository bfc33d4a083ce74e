"""TensorLLM: multi-head tensorisation + shared-factor Tucker decomposition of attention weights.

The library is plain torch/transformers: no Prefect or Ray import here, and mlflow only in the two modules
that are MLflow's side of the library: ``tensorllm.registry`` (logging, registration, promotion, queries)
and ``tensorllm.pyfunc_model`` (a registered version as an MLflow pyfunc model).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``tensorllm.load_compressed`` and ``tensorllm.compress``: imported on first use, so ``import tensorllm``
    stays light."""
    if name == "compress":
        from .compression import compress

        return compress
    if name == "load_compressed":
        from .export import load_compressed

        return load_compressed
    raise AttributeError(f"module 'tensorllm' has no attribute {name!r}")
