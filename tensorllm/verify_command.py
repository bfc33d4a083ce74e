"""``tensorllm verify DIR|SPEC``: check stored files against the sha256 recorded when they were written.

* an export folder (``tensorllm export``, ``tensorllm compress``, the sweep's exports): every file in its
  ``tensorllm_manifest.json`` (:mod:`tensorllm.manifest`);
* a decomposition artifact folder (``artifact.json`` + ``tensors.safetensors``), or a folder of them (e.g.
  ``runs/artifacts/<model>``): each ``tensors.safetensors`` against its ``tensors_sha256``;
* a registry spec (``NAME``, ``NAME@ALIAS``, ``NAME/VERSION``, as ``tensorllm export`` takes it): that version's
  artifacts as the store holds them, against ``artifact.json`` and the digests the registration recorded;
* a sweep's report run (``runs:/RUN_ID``: the summary's ``sweep_run_id``, the registered model's tag
  ``last_sweep.run_id``): its summary, plots and configuration against its ``tensorllm_manifest.json``, and the
  manifest against the sha256 in the run's tag.

One line per checked item and a summary; exit 0 when everything is intact. A damaged or missing file is one
line naming it, ``tensorllm verify: error: …``, after the lines of the items checked, and exit code 2 (as
for every bad input).

Usage::

    tensorllm verify runs/exports/smollm2-135m-champion
    tensorllm verify smollm2-135m-qa@champion --tracking-uri sqlite:////abs/runs/mlflow/mlflow.db
    tensorllm verify runs:/0123abcd... --tracking-uri sqlite:////abs/runs/mlflow/mlflow.db
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from .artifact import DIGEST_KEY, META_FILE, TENSORS_FILE, read_meta, verify_tensors
from .manifest import MANIFEST_FILE, check_file, has_manifest, read_manifest

#: the prefix of a run target (MLflow's own ``runs:/`` URI form)
RUN_PREFIX = "runs:/"


@dataclass(frozen=True)
class Check:
    """One item to check: its name, and a function that returns a one-line description or raises naming it."""

    name: str
    run: Callable[[], str]


def add_verify_command(sub) -> None:
    """The ``verify`` sub-command (called from :func:`tensorllm.cli.build_parser`)."""
    p = sub.add_parser("verify", help="check an export folder, artifact folder(s) or a registered version against "
                                      "the sha256 recorded when they were written")
    p.add_argument("target", metavar="DIR|SPEC", help="an export folder, an artifact folder (or a folder of them), "
                                                     "a registry spec NAME, NAME@ALIAS or NAME/VERSION, or a sweep's "
                                                     "report run runs:/RUN_ID")
    p.add_argument("--tracking-uri", "--mlflow-tracking-uri", dest="tracking_uri",
                   help="with a registry spec or a run: default $MLFLOW_TRACKING_URI or sqlite under runs/mlflow")
    p.add_argument("--json", action="store_true", help="also print the checked items as JSON")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    from .cli import emit_json

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tensorllm-verify-") as tmp:
        what, checks = plan_checks(args.target, args.tracking_uri, Path(tmp))
        damaged, lines = [], []
        for check in checks:
            try:
                lines.append(check.run())
                print(lines[-1])
            except (ValueError, OSError) as exc:
                damaged.append(exc)
                print(f"DAMAGED  {check.name}")
    seconds = time.perf_counter() - start
    if damaged:
        raise ValueError(f"{len(damaged)} of {len(checks)} items of {what} damaged; first: {damaged[0]}")
    print(f"{what}: {len(checks)} items intact ({seconds:.1f} s)")
    if args.json:
        emit_json({"target": args.target, "what": what, "items": lines, "intact": True, "seconds": seconds})
    return 0


def plan_checks(target: str, tracking_uri: str | None, tmp: Path) -> tuple[str, list[Check]]:
    """(what ``target`` is, its checks); ``ValueError``/``FileNotFoundError`` when it is none of the forms."""
    if target.startswith(RUN_PREFIX):
        return _sweep_run_checks(target, tracking_uri, tmp)
    path = Path(target).expanduser()
    if path.is_dir():
        if has_manifest(path):
            files = read_manifest(path)
            return f"export {path}", [_file_check(path, name, rec) for name, rec in sorted(files.items())]
        artifacts = list(_artifact_folders(path))
        if artifacts:
            return f"artifacts under {path}", [_artifact_check(a) for a in artifacts]
        if (path / "config.json").is_file():
            raise FileNotFoundError(f"{path / MANIFEST_FILE} is missing: {path} records no digests (an export "
                                    "written before exports carried them, or a model folder); re-export it")
        raise ValueError(f"{path} is neither an export folder ({MANIFEST_FILE}) nor artifact folders ({META_FILE})")
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; give an export folder, an artifact folder or a registry spec")
    return _registry_checks(target, tracking_uri, tmp)


def _artifact_folders(path: Path) -> Iterator[Path]:
    if (path / META_FILE).is_file():
        yield path
        return
    for meta in sorted(path.glob(f"*/{META_FILE}")) + sorted(path.glob(f"*/*/{META_FILE}")):
        yield meta.parent


def _file_check(folder: Path, name: str, recorded: dict) -> Check:
    return Check(str(folder / name), lambda: check_file(folder, name, recorded).line())


def _artifact_check(folder: Path, registered: dict | None = None) -> Check:
    def run() -> str:
        meta = read_meta(folder)
        verify_tensors(folder, meta)
        if registered is not None and registered.get(DIGEST_KEY) != meta.get(DIGEST_KEY):
            raise ValueError(f"{folder / META_FILE} records {DIGEST_KEY} {meta.get(DIGEST_KEY)} but the registered "
                             f"version recorded {registered.get(DIGEST_KEY)}")
        size = (folder / TENSORS_FILE).stat().st_size
        return f"ok  {folder / TENSORS_FILE}  {size:,} bytes  sha256 {meta[DIGEST_KEY][:16]}…"
    return Check(str(folder / TENSORS_FILE), run)


def _registry_checks(spec: str, tracking_uri: str | None, tmp: Path) -> tuple[str, list[Check]]:
    from .registry import VARIANT_DIR, Registry, parse_spec  # imports mlflow: only on the registry path

    try:
        parse_spec(spec)
    except ValueError:
        raise FileNotFoundError(f"{spec!r} is not a folder, nor a registry spec (NAME, NAME@ALIAS or "
                                "NAME/VERSION)") from None
    from .mlflow_store import existing_store

    registry = Registry(existing_store(tracking_uri))
    info = registry.show(spec)
    entries = info.get("artifacts") or []
    if not entries:
        raise ValueError(f"{spec} (version {info['version']}) records no artifacts to verify")
    # two stored copies: the run's variant/ folder (export, models load) and the registered MLflow model's own
    # (what mlflow.pyfunc.load_model and serving use)
    run_copy = Path(registry.client.download_artifacts(info["run_id"], VARIANT_DIR, str(tmp / "run")))
    version = SimpleNamespace(name=info["name"], version=info["version"])
    source = info["source"]
    if source.startswith("models:/m-"):  # an MLflow 3 logged model: its storage location downloads directly
        source = registry.client.get_logged_model(source.removeprefix("models:/").strip("/")).artifact_location
    model_copy = registry._download(version, source, str(tmp / "model"))
    checks = [_artifact_check(run_copy / entry["dir"], entry) for entry in entries]
    for entry in entries:
        found = sorted(p for p in model_copy.rglob(entry["dir"]) if p.parent.parent.name == VARIANT_DIR)
        checks += [_artifact_check(path, entry) for path in found[:1]]
        if not found:
            checks.append(Check(f"{model_copy}/…/{entry['dir']}", lambda e=entry: _missing(spec, e)))
    return f"{spec} (version {info['version']})", checks


def _sweep_run_checks(target: str, tracking_uri: str | None, tmp: Path) -> tuple[str, list[Check]]:
    """A sweep report run's files against its manifest, and the manifest against the run's tag."""
    from mlflow.exceptions import MlflowException

    from .artifact import file_sha256
    from .mlflow_store import existing_store
    from .registry import Registry
    from .registry.sweep_report import SWEEP_MANIFEST_TAG

    run_id = target.removeprefix(RUN_PREFIX).strip("/")
    uri = existing_store(tracking_uri)
    client = Registry(uri).client
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise FileNotFoundError(f"no run {run_id!r} in {uri}; allowed: runs:/RUN_ID of a sweep's report run "
                                "(its sweep_run_id)") from None
    recorded = run.data.tags.get(SWEEP_MANIFEST_TAG)
    if not recorded:
        raise ValueError(f"run {run_id} has no {SWEEP_MANIFEST_TAG} tag: not a sweep's report run, or one logged "
                         "before sweep reports recorded digests; allowed: runs:/RUN_ID of a sweep's report run")
    folder = Path(client.download_artifacts(run_id, "", str(tmp / "run")))
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        raise FileNotFoundError(f"{target}/{MANIFEST_FILE} is missing (the run's tag records its sha256)")
    actual = file_sha256(manifest)
    if actual != recorded:
        raise ValueError(f"{target}/{MANIFEST_FILE} is damaged: its sha256 is {actual} but the run's "
                         f"{SWEEP_MANIFEST_TAG} tag recorded {recorded}")
    files = read_manifest(folder)
    return f"sweep run {run_id}", [_file_check(folder, name, rec) for name, rec in sorted(files.items())]


def _missing(spec: str, entry: dict) -> str:
    raise FileNotFoundError(f"the registered model of {spec} has no copy of {entry['dir']}")
