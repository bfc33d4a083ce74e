"""Models-from-code entry point of a registered TensorLLM variant: MLflow executes this file to get the model.

It is stored in every model version next to ``code/pyfunc_model.py`` (see :mod:`tensorllm.pyfunc_model`).
"""

import mlflow

try:  # load / serve time: the copy of pyfunc_model.py shipped with the version (code_paths)
    from pyfunc_model import TensorLLMTextModel
except ModuleNotFoundError as exc:  # log time: MLflow runs this file before code_paths are on sys.path
    if exc.name != "pyfunc_model":
        raise
    from tensorllm.pyfunc_model import TensorLLMTextModel

mlflow.models.set_model(TensorLLMTextModel())
