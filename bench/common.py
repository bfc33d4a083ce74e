"""Shared helpers for the benchmark scripts in ``bench/``: arguments, device, timing, tables, JSON.

Every bench script follows one convention::

    python -m bench.NAME [--quick] [--json] [--device cpu|cuda] [--threads N]

It prints a table, writes ``bench/results/NAME.json`` (``NAME-quick.json`` for ``--quick``, so a quick
check never overwrites a full run) with the date, the machine, the command and the rows, and with
``--json`` prints that object as the last line of stdout. ``--quick`` is a reduced run that fits in
under 3 minutes on an idle 2-core CPU. The default device is cuda when available, else cpu; timers
synchronise the device. ``--threads 1`` gives steadier numbers on a shared, oversubscribed CPU.

Typical use::

    from bench.common import base_parser, finish, pick_device, print_table, setup_threads, time_call

    args = base_parser(__doc__).parse_args()
    setup_threads(args.threads)
    device = pick_device(args.device)
    timing = time_call(lambda: work(x), device=device, repeats=3)   # .median, .times, .cpu_times
    rows = [{"case": "a", "seconds": timing.median}]
    print_table(rows, [("case", "{}"), ("seconds", "{:.3f}", "wall s")], title="My benchmark")
    finish("NAME", rows, args, device=device, extra={"notes": "..."})

``run_isolated(path, "func", kwargs, timeout=...)`` calls ``func(**kwargs)`` from the file ``path`` in a
*fresh* Python process and returns its JSON-able result with the child's own peak RSS and wall time
(for memory measurements and for calls that need a hard timeout). Measure a child's peak RSS with
:func:`peak_rss_mib` (VmHWM), not ``ru_maxrss``: on Linux a child's ``ru_maxrss`` starts at its parent's
high-water mark (fork+exec), see :func:`peak_rss_mib`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
_RESULT_PREFIX = "@@BENCH_RESULT@@"

# --------------------------------------------------------------------------------------------- arguments

def base_parser(description: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser with the common flags ``--quick``, ``--json`` and ``--device``."""
    parser = argparse.ArgumentParser(description=(description or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced run (< 3 min on a 2-core CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="compute device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads here and in child processes (default: torch's default); "
                             "1 gives steadier numbers on a shared, oversubscribed machine")
    return parser


THREADS_ENV = "BENCH_TORCH_THREADS"


def setup_threads(threads: int | None) -> int:
    """Apply ``--threads`` (torch.set_num_threads here, and via the environment in run_isolated children)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
        os.environ[THREADS_ENV] = str(threads)
    return torch.get_num_threads()


def pick_device(requested: str | None = None) -> str:
    """``requested`` if given (error if CUDA is asked for but missing), else cuda when available, else cpu."""
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was requested but torch.cuda.is_available() is False")
    return requested


# ------------------------------------------------------------------------------------------------ timing

def sync(device: Any = None) -> None:
    """Wait for queued GPU work (no-op on CPU) so that host timers measure the work itself."""
    import torch

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Wall-clock seconds of repeated calls; ``result`` is the last call's return value."""

    times: list[float]
    result: Any = field(default=None, repr=False)
    cpu_times: list[float] = field(default_factory=list)  # process CPU seconds (all threads) per call

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_times) if self.cpu_times else float("nan")

    def to_dict(self) -> dict:
        return {"median_s": self.median, "best_s": self.best, "times_s": self.times, "cpu_s": self.cpu_times}


def time_call(fn: Callable[[], Any], *, device: Any = None, repeats: int = 1, warmup: int = 0) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls, synchronising the device around each.

    Records wall-clock seconds and the process's CPU seconds (all threads; on a shared, oversubscribed
    CPU the CPU time is the steadier of the two, on CUDA only the wall time means anything).
    """
    result = None
    for _ in range(warmup):
        result = fn()
    sync(device)
    times, cpu = [], []
    for _ in range(max(1, repeats)):
        cpu_start = time.process_time()
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return Timing(times, result, cpu)


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` then ``sw.seconds`` (synchronises on entry and exit)."""

    def __init__(self, device: Any = None):
        self.device = device
        self.seconds = float("nan")

    def __enter__(self) -> "Stopwatch":
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start


def _proc_status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of *this* process, in MiB.

    On Linux this is ``VmHWM`` from /proc/self/status: the peak of this process image only, and
    resettable with :func:`reset_peak_rss`. Beware of ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in a
    child process: Linux carries the *parent's* high-water mark across fork+exec into it, so a child
    started by a 2 GiB parent reports >= 2 GiB whatever it does (measured here: a 13 MiB child of an
    800 MiB parent reported 814 MiB). ru_maxrss is the fallback off Linux only.
    """
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def current_rss_mib() -> float | None:
    """Resident set size now (``VmRSS``), in MiB; None where /proc is missing."""
    rss = _proc_status_kib("VmRSS")
    return None if rss is None else rss / 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: ``/proc/self/clear_refs`` = 5).

    Call it after imports to measure the peak of the work alone. Returns False where unsupported.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ machine info

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: Any = None) -> dict:
    """CPU model and cores, memory, load, Python/torch versions and the accelerator's name."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
        "device_name": None,
    }
    try:
        info["load_avg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        info["load_avg"] = None
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        try:
            pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            info["memory_gib"] = round(pages / 2**30, 1)
        except (ValueError, OSError):
            info["memory_gib"] = None
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info["device_name"] = props.name
        info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    elif device is not None:
        info["device_name"] = info["cpu_model"]
    return info


def library_versions(*names: str) -> dict:
    """``{name: version or None}`` for importable packages (e.g. ``library_versions("tensorly")``)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ------------------------------------------------------------------------------------------------ output

Column = tuple[str, str] | tuple[str, str, str]  # (key, format) or (key, format, header)


def format_value(value: Any, fmt: str = "{}") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, str):
        return value
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[Column], title: str | None = None) -> str:
    """A plain-text (Markdown pipe) table of ``rows`` restricted to ``columns``; missing values print ``-``."""
    cols = [(c[0], c[1], c[2] if len(c) > 2 else c[0]) for c in columns]
    cells = [[format_value(row.get(key), fmt) for key, fmt, _ in cols] for row in rows]
    headers = [header for _, _, header in cols]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(_looks_numeric(r[i]) for r in cells) and cells != [] for i in range(len(cols))]

    def line(values):
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    out = []
    if title:
        out.append(f"\n{title}")
    out.append(line(headers))
    out.append("|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                              for w, num in zip(widths, numeric)) + "|")
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _looks_numeric(text: str) -> bool:
    text = text.strip().rstrip("x%s").replace(",", "")
    if text in ("-", "nan", ""):
        return True
    try:
        float(text.lstrip("><~"))
        return True
    except ValueError:
        return False


def print_table(rows: Sequence[dict], columns: Sequence[Column], title: str | None = None,
                file=None) -> None:
    print(format_table(rows, columns, title), file=file or sys.stdout, flush=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # torch / numpy scalars
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    return value


def command_line() -> str:
    """The command that reproduces this run: ``python -m bench.NAME ARGS`` (run from the project root)."""
    script = Path(sys.argv[0]).resolve()
    head = ["python", "-m", f"bench.{script.stem}"] if script.parent == BENCH_DIR else [Path(sys.executable).name, sys.argv[0]]
    return " ".join(shlex.quote(a) for a in head + sys.argv[1:])


def result_payload(name: str, rows: Sequence[dict], args: argparse.Namespace | None = None, *,
                   device: Any = None, extra: dict | None = None) -> dict:
    """The standard results object: name, date, command, mode, machine, rows and any ``extra`` sections."""
    payload = {
        "benchmark": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "quick": bool(getattr(args, "quick", False)),
        "machine": machine_info(device),
        "rows": list(rows),
    }
    payload.update(extra or {})
    return _jsonable(payload)


def write_results(payload: dict, path: str | Path | None = None) -> Path:
    """Write ``payload`` to ``bench/results/<benchmark>[-quick].json`` atomically (via a .tmp file)."""
    if path is None:
        suffix = "-quick" if payload.get("quick") else ""
        path = RESULTS_DIR / f"{payload['benchmark']}{suffix}.json"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def finish(name: str, rows: Sequence[dict], args: argparse.Namespace | None = None, *, device: Any = None,
           extra: dict | None = None, path: str | Path | None = None) -> dict:
    """Write the results file, say where it is, and with ``--json`` print the payload as the last line."""
    payload = result_payload(name, rows, args, device=device, extra=extra)
    written = write_results(payload, path)
    print(f"\nresults written to {written.relative_to(REPO_ROOT) if written.is_relative_to(REPO_ROOT) else written}",
          flush=True)
    if getattr(args, "json", False):
        print(json.dumps(payload), flush=True)
    return payload


# ------------------------------------------------------------------------------------ isolated processes

_RUNNER = r"""
import importlib.util, json, resource, sys, time, traceback
path, func, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
kwargs = json.loads(sys.stdin.read())
from bench.common import peak_rss_mib
import os
if os.environ.get("BENCH_TORCH_THREADS"):
    import torch
    torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))
out = {{}}
try:
    spec = importlib.util.spec_from_file_location("_bench_isolated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out["rss_after_import_mib"] = peak_rss_mib()
    start = time.perf_counter()
    out["result"] = getattr(module, func)(**kwargs)
    out["call_s"] = time.perf_counter() - start
    out["ok"] = True
except BaseException as exc:
    out["ok"] = False
    out["error"] = f"{{type(exc).__name__}}: {{exc}}"
    out["traceback"] = traceback.format_exc()
out["peak_rss_mib"] = peak_rss_mib()
out["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # includes the parent's peak
print(prefix + json.dumps(out, default=str), flush=True)
"""


def _with_repo(pythonpath: str | None) -> str:
    """The child imports ``bench.common`` (and the project) as the parent does, from wherever it starts."""
    return os.pathsep.join(p for p in (str(REPO_ROOT), pythonpath) if p)


def run_isolated(path: str | Path, func: str, kwargs: dict | None = None, *, timeout: float | None = None,
                 env: dict | None = None) -> dict:
    """Call ``func(**kwargs)`` defined in the file ``path`` in a fresh Python process.

    Returns ``{"ok", "result", "call_s", "peak_rss_mib", "rss_after_import_mib", "wall_s"}``: ``peak_rss_mib``
    is the child's own peak RSS (:func:`peak_rss_mib`, VmHWM: imports included, unless ``func`` called
    :func:`reset_peak_rss`), ``rss_after_import_mib`` the peak after importing ``path``.
    On a timeout: ``{"ok": False, "timed_out": True}``.
    ``kwargs`` and the result must be JSON-serialisable. The child's stderr is passed through.
    """
    code = _RUNNER.format()
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(path), func, _RESULT_PREFIX],
                              input=json.dumps(kwargs or {}), capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PYTHONPATH": _with_repo(os.environ.get("PYTHONPATH")),
                                                     **(env or {})})
    except subprocess.TimeoutExpired:
        return {"ok": False, "timed_out": True, "wall_s": time.perf_counter() - start, "timeout_s": timeout}
    wall = time.perf_counter() - start
    if proc.stderr.strip():
        sys.stderr.write(proc.stderr)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            out = json.loads(line[len(_RESULT_PREFIX):])
            out["wall_s"] = wall
            if not out.get("ok"):
                sys.stderr.write(out.get("traceback", ""))
            return out
    return {"ok": False, "error": f"child exited with {proc.returncode} without a result",
            "stdout_tail": proc.stdout[-2000:], "wall_s": wall}
