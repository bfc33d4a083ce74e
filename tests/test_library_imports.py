"""The library stands alone: nothing in ``tensorllm/`` imports the orchestration (``flows/``, ``tasks/``).

The ``tensorllm`` command's pipeline part (``sweep``) is attached from the pipeline side through the
``tensorllm.commands`` entry-point group, so the library's modules never need to name it. This walks every
import statement, lazy ones inside functions included, because a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = {"flows", "tasks", "deployments", "bench", "tests"}


def imported_roots(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in one file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def test_no_library_module_imports_the_orchestration():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {root}"
                 for path in sorted((ROOT / "tensorllm").rglob("*.py"))
                 for line, root in sorted(imported_roots(path)) if root in ORCHESTRATION]
    assert not offenders, "the library must not import the orchestration:\n" + "\n".join(offenders)


def test_the_walker_sees_lazy_imports(tmp_path):
    """The check above can fail: an import inside a function body is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from flows.config import SweepConfig\n    import tasks.evaluate\n")
    assert imported_roots(module) == {(2, "flows"), (3, "tasks")}


def test_the_library_command_imports_no_orchestration_until_a_pipeline_command_is_used():
    """Importing the library's CLI loads neither Prefect nor ``flows``; building the parser attaches ``sweep``."""
    code = ("import sys, tensorllm.cli as c\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flows', 'tasks', 'prefect', 'ray')))\n"
            "c.build_parser()\n"
            "print('sweep' in c.build_parser()._subparsers._group_actions[0].choices)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    before, has_sweep = out.stdout.splitlines()
    assert before == "[]", f"importing tensorllm.cli loaded {before}"
    assert has_sweep == "True", "the sweep sub-command, registered by the pipeline's entry point, is missing"
