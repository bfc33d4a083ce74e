"""Every error class of the project survives pickling with its message: errors cross Ray and Prefect as pickles,
and one that cannot be rebuilt turns a clear one-line error into a ``TypeError`` about ``__init__`` arguments.

``EXAMPLES`` holds one instance per class; a completeness test walks the project's modules so that a new error
class without an example fails here.
"""

from __future__ import annotations

import importlib
import pickle
import pkgutil

import pytest

from flows.validate import SweepInputError
from tensorllm.evaluation.data import DataFormatError
from tensorllm.evaluation.data.user_spec import UserDatasetError

EXAMPLES = [
    DataFormatError("/data/fever/paper_dev.jsonl", 3, "not JSON (Expecting value)"),
    DataFormatError("/data/hotpotqa/dev.json", 7, "no 'answer' field", unit="record"),
    SweepInputError("layers: [99] out of range"),
    UserDatasetError("dataset 'mine.yaml': prompt_field: 'question' is not a field of mine.jsonl:1"),
]
#: private control-flow exceptions that never leave the function that raises them
INTERNAL = {"tensorllm.activation_fit._Done", "tensorllm.compression.layer_damage._Stop"}


def project_error_classes() -> set[str]:
    found = set()
    for package in ("tensorllm", "flows", "tasks"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == info.name:
                    found.add(f"{value.__module__}.{value.__qualname__}")
    return found - INTERNAL


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: f"{type(e).__name__}:{e}"[:60])
def test_an_error_survives_pickling_with_its_message_and_fields(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert vars(copy) == vars(error)  # path, line, message, unit: what a handler may read


def test_every_error_class_has_an_example():
    covered = {f"{type(e).__module__}.{type(e).__qualname__}" for e in EXAMPLES}
    missing = project_error_classes() - covered
    assert not missing, f"error classes with no pickling example in EXAMPLES: {sorted(missing)}"
