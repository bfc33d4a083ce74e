"""One line per finished task of a running sweep, on a terminal: what finished, how, how long, how many.

The sweep's tasks run on Ray workers and report to the Prefect API; the driver process only waits.
So progress is read from the API, not from the flow: every flow run the block creates carries a unique
tag (:func:`prefect.tags`), and a background thread polls the task runs of those flow runs every
``interval`` seconds, printing each that reached a final state once::

    [  3 done, 2 running]  decompose-layer-2  Completed  4.1s
    [  4 done, 1 running]  evaluate-L2-16x8x2-qa_wikidata-val  Completed (cached)  0.2s

Nothing is printed when ``enabled`` is False (``--json`` or not a terminal). The flow's result does not
depend on this thread: a failed poll is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import TextIO

log = logging.getLogger(__name__)

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@contextlib.contextmanager
def task_progress(api_url: str, enabled: bool = True, interval: float = 2.0,
                  stream: TextIO | None = None) -> Iterator[str | None]:
    """Tag the flow runs started in the block and print their finished task runs; yields the tag."""
    if not enabled:
        yield None
        return
    from prefect import tags

    tag = f"tensorllm-sweep-{uuid.uuid4().hex[:12]}"
    reporter = _Reporter(tag, stream or sys.stderr)
    stop = threading.Event()
    thread = threading.Thread(target=reporter.loop, args=(stop, interval), name="sweep-progress", daemon=True)
    thread.start()
    try:
        with tags(tag):
            yield tag
    finally:
        stop.set()
        thread.join(timeout=interval + 10)
        reporter.poll()  # the last tasks, finished since the previous poll


class _Reporter:
    def __init__(self, tag: str, stream: TextIO):
        self.tag = tag
        self.stream = stream
        self.printed: set[str] = set()

    def loop(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            self.poll()

    def poll(self) -> None:
        try:
            runs = self._task_runs()
        except Exception as exc:  # the API may be busy or going away; progress is best effort
            log.debug("progress poll failed: %s", exc)
            return
        running = sum(1 for r in runs if r.state_type is not None and r.state_type.value == "RUNNING")
        finished = [r for r in runs if r.state_type is not None and r.state_type.value in FINAL]
        finished.sort(key=lambda r: r.end_time or r.expected_start_time or 0)
        for run in finished:
            if str(run.id) in self.printed:
                continue
            self.printed.add(str(run.id))
            self.stream.write(format_line(len(self.printed), running, run) + "\n")
        self.stream.flush()

    def _task_runs(self) -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        runs, offset = [], 0
        with get_client(sync_client=True) as client:
            while True:
                page = client.read_task_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[self.tag])),
                                             limit=200, offset=offset)
                runs.extend(page)
                if len(page) < 200:
                    return runs
                offset += 200


def format_line(done: int, running: int, run) -> str:
    """``[  3 done, 2 running]  <task run name>  <state>  <seconds>``."""
    state = run.state_name or (run.state_type.value.title() if run.state_type else "?")
    seconds = f"{run.total_run_time.total_seconds():.1f}s" if run.total_run_time else ""
    return f"[{done:>3d} done, {running} running]  {run.name}  {state}  {seconds}".rstrip()
