"""One line per finished task of the flow runs started in the block, read from a real Prefect API."""

from __future__ import annotations

import io

import pytest
from prefect import flow, task

from flows.progress import task_progress

pytestmark = pytest.mark.integration


@task(task_run_name="square-{x}")
def square(x: int) -> int:
    return x * x


@flow(name="progress-demo")
def demo(n: int) -> int:
    return sum(square(i) for i in range(n))


@flow(name="progress-other")
def other() -> int:
    return square(99)


def test_each_finished_task_of_this_block_is_printed_once(prefect_api):
    other()  # a flow run outside the block: its tasks are not this sweep's
    stream = io.StringIO()
    with task_progress(prefect_api, stream=stream, interval=0.5) as tag:
        assert demo(3) == 5
    lines = stream.getvalue().splitlines()
    names = sorted(line.split("]  ")[1].split("  ")[0] for line in lines)
    assert tag and names == ["square-0", "square-1", "square-2"]  # once each; square-99 is another run's
    assert all("Completed" in line for line in lines)
    assert lines[-1].startswith("[  3 done")  # a running count


def test_disabled_progress_prints_nothing(prefect_api):
    stream = io.StringIO()
    with task_progress(prefect_api, enabled=False, stream=stream) as tag:
        demo(1)
    assert tag is None and stream.getvalue() == ""
