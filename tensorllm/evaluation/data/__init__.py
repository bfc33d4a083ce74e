"""Evaluation datasets with the paper's (LASER's) prompts, loaded from local files (or the hub, if online).

``load_task(name, tokenizer)`` returns a :class:`Task`; ``dataset_names()`` lists the names.
"""

from .errors import DataFormatError
from .registry import DATASETS, dataset_digest, dataset_names, default_data_dir, load_task
from .task import Task

__all__ = ["DATASETS", "DataFormatError", "Task", "dataset_digest", "dataset_names", "default_data_dir", "load_task"]
