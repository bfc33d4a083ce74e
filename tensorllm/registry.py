"""MLflow registry of compressed variants: one run + one model version per variant, champions by alias.

With :mod:`tensorllm.pyfunc_model`, one of the two modules of the library that import mlflow. A *variant*
is a base model plus a list of artifact folders (see :mod:`tensorllm.artifact`); what is registered is
**not** the model's weights but a small folder, so the store grows with the compressed size::

    variant/
      variant.json                 # key, name, base_model, artifacts' metadata (lineage), in apply order
      artifacts/<basename>/        # each artifact folder: artifact.json + tensors.safetensors

Each :meth:`Registry.register_variant` call logs one MLflow run (params, metrics, tags, extra files, and
the folder above under ``variant/``), logs in that run an MLflow-native pyfunc model (text in, generated
text out; its artifacts are the same small folder, see :mod:`tensorllm.pyfunc_model`) and creates one
version of a registered model from it: the version's ``source`` is ``models:/<model_id>``, so
``mlflow.pyfunc.load_model("models:/NAME@champion")`` and ``mlflow models serve`` work on it. It is
idempotent on ``VariantRecord.key`` (version tag ``variant_key``; the sweep keys variants by content, see
:mod:`tensorllm.identity`), a key never names two sets of weights (tag ``weights_sha256``: another record with
other artifacts under a known key is refused), and all versions of a registered model
must share one base-model identity (tag ``model_identity``). :meth:`Registry.show` reads the lineage from
the run's ``variant/variant.json``; :meth:`Registry.load` downloads that folder and rebuilds a normal
Hugging Face folder with :func:`tensorllm.artifact.materialise`.

Usage::

    reg = Registry()                                   # sqlite store under ./runs/mlflow unless MLFLOW_TRACKING_URI
    v = reg.register_variant(record, "smollm2-135m-qa")
    reg.set_champion("smollm2-135m-qa", v, {"reason": "val_accuracy +2.1 pts over champion"})
    reg.describe("smollm2-135m-qa", v, "layer 29 MHA at ranks 288x32x4; +2.1 pts on qa_wikidata")
    reg.show("smollm2-135m-qa@champion")
    reg.load("smollm2-135m-qa@champion", Path("out/champion-hf"))   # AutoModelForCausalLM.from_pretrained(...)
    mlflow.pyfunc.load_model("models:/smollm2-135m-qa@champion").predict(["The capital of France is"])

Model specs: ``NAME`` (the champion if set, else the latest version), ``NAME@ALIAS`` (``@latest`` is
built into MLflow) or ``NAME/VERSION``; a ``models:/`` prefix is accepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

# Defaults only: never override what the user set. No telemetry; no progress bars for our small downloads.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# An unreachable tracking server must fail in bounded time: MLflow's defaults (7 retries, exponential
# backoff factor 2, 120 s per request) kept a sweep retrying for many minutes. With these, a refused
# connection fails in seconds and a silent server within about a minute (measured in the tests).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

import mlflow  # noqa: E402
import mlflow.artifacts  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from . import __version__  # noqa: E402
from .artifact import META_FILE, TENSORS_FILE, VARIANT_FILE, materialise, read_meta  # noqa: E402
from .identity import weights_digest  # noqa: E402
from .mlflow_store import default_tracking_uri, store_creation_lock  # noqa: E402
from .pyfunc_model import CHAT_TEMPLATE, VARIANT_JSON, parse_chat_template, save_pyfunc  # noqa: E402

DEFAULT_EXPERIMENT = "tensorllm"
DEFAULT_ALIAS = "champion"
VARIANT_DIR = "variant"              # run artifact path of the registered folder
VARIANT_FORMAT = "tensorllm-variant/1"
KEY_TAG = "variant_key"
KEY_SHA_TAG = "variant_key_sha256"   # hex digest of the key: safe to use inside MLflow filter strings
METRIC_TAG_PREFIX = "metric."
IDENTITY_TAG = "model_identity"      # base-model identity: one per registered model
WEIGHTS_TAG = "weights_sha256"       # the variant's weights: base identity + artifact digests (tensorllm.identity)
PYFUNC_NAME = "model"                # name of the logged pyfunc model in each variant run
NOTE_TAG = "mlflow.note.content"     # where MLflow keeps a run's description

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME_RULE = "letters, digits, '_', '.', '-' (starting with a letter or digit)"
_PAGE = 1000
_PROCESS_URI_LOCK = threading.Lock()


@dataclass
class VariantRecord:
    """Everything registered for one variant (the flow builds it; see the module docstring)."""

    key: str
    name: str
    base_model: str
    artifacts: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_spec(spec: str) -> tuple[str, str | None, int | None]:
    """``"NAME"`` -> (NAME, None, None); ``"NAME@ALIAS"`` -> (NAME, ALIAS, None); ``"NAME/3"`` -> (NAME, None, 3).

    A leading ``models:/`` is accepted. Raises ValueError naming what is wrong and the allowed forms.
    """
    forms = "allowed forms: 'NAME', 'NAME@ALIAS' or 'NAME/VERSION' (e.g. 'smollm2-qa', 'smollm2-qa@champion', 'smollm2-qa/3')"
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty model spec {spec!r}; {forms}")
    text = spec.strip()
    if text.startswith("models:/"):
        text = text[len("models:/"):]
    alias: str | None = None
    version: int | None = None
    if "@" in text and "/" in text:
        raise ValueError(f"model spec {spec!r} has both '@' and '/': give an alias or a version, not both; {forms}")
    if text.count("@") > 1 or text.count("/") > 1:
        raise ValueError(f"model spec {spec!r} is malformed (more than one '@' or '/'); {forms}")
    if "@" in text:
        name, alias = text.split("@")
        if not alias:
            raise ValueError(f"model spec {spec!r} has an empty alias after '@'; {forms}")
        if not _ALIAS_RE.match(alias):
            raise ValueError(f"alias {alias!r} in model spec {spec!r} is invalid: use letters, digits, '_' and '-'")
    elif "/" in text:
        name, raw = text.split("/")
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"version {raw!r} in model spec {spec!r} must be a positive integer; {forms}")
        version = int(raw)
    else:
        name = text
    if not name:
        raise ValueError(f"model spec {spec!r} has no model name; {forms}")
    _check_name(name, what=f"model name in spec {spec!r}")
    return name, alias, version


def _check_name(name: str, what: str = "registered model name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{what} {name!r} is invalid: use {_NAME_RULE}")
    return name


def _check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
        raise ValueError(f"alias {alias!r} is invalid: use letters, digits, '_' and '-'")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise ValueError(f"alias {alias!r} is reserved by MLflow ('latest' and 'v<N>'); pick another name")
    return alias


def _now_ms() -> int:
    return int(time.time() * 1000)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _param_value(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)) or value is None:
        return str(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except TypeError:
        return str(value)


def _float_metrics(metrics: Mapping[str, float] | None, what: str) -> dict[str, float]:
    """Metric values as floats; ``None`` values are dropped (not computed), anything else non-numeric is an error."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if value is None:
            continue
        if isinstance(value, (bool, str)) or not (isinstance(value, (int, float)) or hasattr(value, "__float__")):
            raise TypeError(f"{what}: metric {key!r} must be a number, got {type(value).__name__} {value!r}")
        out[str(key)] = float(value)
    return out


def _metric_tag(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else str(value)


def _decision_tags(decision: Mapping | None) -> dict[str, str]:
    """Decision keys without a leading ``promotion.`` (callers may pass them prefixed or bare), values as text."""
    out: dict[str, str] = {}
    for k, v in (decision or {}).items():
        key = str(k).removeprefix("promotion.")
        if not key:
            raise ValueError(f"decision key {k!r} is empty once the 'promotion.' prefix is removed")
        out[key] = "" if v is None else str(v)
    return out


def _check_same_weights(existing, weights: str | None, registered_model: str, record: VariantRecord) -> None:
    """A key names one set of weights: refuse to hand a version (whose metrics the caller will then update) to
    a record with other weights under the same key (a key that is not content-addressed, e.g. a name)."""
    recorded = existing.tags.get(WEIGHTS_TAG)
    if weights and recorded and recorded != weights:
        raise ValueError(
            f"registry key {record.key!r} already names {registered_model}/{existing.version} "
            f"({existing.tags.get('variant_name', '?')}), whose weights differ from {record.name!r}'s "
            f"({recorded[:12]} vs {weights[:12]}); the key must cover the artifacts' content "
            "(tensorllm.identity.variant_key)")


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@contextlib.contextmanager
def _process_tracking_uri(uri: str):
    """Point MLflow's process-wide tracking URI at ``uri`` for the block, then restore it exactly.

    Only for ``create_model_version`` from a ``models:/<model_id>`` source: MLflow 3.17's sqlite registry
    store looks the logged model up with a default ``MlflowClient()`` (a TODO in its source), i.e. through
    the process-wide URI, whatever store the calling client uses. The previous value (module global and
    ``MLFLOW_TRACKING_URI``, which ``set_tracking_uri`` also writes) comes back even if the block fails.
    """
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _PROCESS_URI_LOCK:
        previous, previous_env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)  # None also removes the variable it wrote
            if previous_env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _safe_relpath(name: str, what: str) -> str:
    rel = Path(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"{what} {name!r} must be a relative file name without '..'")
    return rel.as_posix()


class Registry:
    """The MLflow side of the pipeline (tracking store + model registry), on a sqlite store by default."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment_name = experiment
        with store_creation_lock(self.tracking_uri):  # opening the store creates or migrates its tables
            self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            try:
                self.client.search_registered_models(max_results=1)  # opens the registry store (its own engine)
            except MlflowException as exc:
                if "Max retries exceeded" not in str(exc) and "timed out" not in str(exc).lower():
                    raise
                raise ConnectionError(f"MLflow tracking URI {self.tracking_uri} is not reachable "
                                      f"({str(exc).splitlines()[0][-160:]}); start the server or pass another "
                                      "--mlflow-tracking-uri") from None
            self.experiment_id = self._ensure_experiment(experiment)

    def __repr__(self) -> str:
        return f"Registry(tracking_uri={self.tracking_uri!r}, experiment={self.experiment_name!r})"

    # ------------------------------------------------------------------ setup

    def _artifact_location(self) -> str | None:
        """For a sqlite store: ``<db folder>/artifacts``; otherwise the server's default."""
        uri = self.tracking_uri
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///"):].split("?")[0])
            if db.name and str(db) != ":memory:":
                return str((db.parent / "artifacts").resolve())
        return None

    def _ensure_experiment(self, name: str) -> str:
        if not name or not isinstance(name, str):
            raise ValueError(f"experiment name must be a non-empty string; got {name!r}")
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(name, artifact_location=self._artifact_location())
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(name)  # created concurrently by another process
        if exp.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} is deleted in {self.tracking_uri}; restore it "
                f"(MlflowClient().restore_experiment({exp.experiment_id!r})) or use another experiment name"
            )
        return exp.experiment_id

    def _ensure_registered_model(self, name: str) -> None:
        try:
            self.client.create_registered_model(
                name, tags={"created_by": "tensorllm"},
                description="TensorLLM variants: each version is a base model + factorised-layer artifacts",
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    # ------------------------------------------------------------------ lookups

    def _registered_names(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            page = self.client.search_registered_models(max_results=_PAGE, page_token=token)
            names.extend(m.name for m in page)
            token = page.token
            if not token:
                return sorted(names)

    def _get_model(self, name: str):
        _check_name(name)
        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            names = self._registered_names()
            raise ValueError(
                f"no registered model {name!r} in {self.tracking_uri}; registered models: "
                f"{', '.join(names) if names else '(none)'}"
            ) from None

    def _versions(self, name: str, filter_extra: str = "") -> list:
        query = f"name='{name}'" + (f" and {filter_extra}" if filter_extra else "")
        out: list = []
        token = None
        while True:
            page = self.client.search_model_versions(query, max_results=_PAGE, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return sorted(out, key=lambda mv: int(mv.version))

    def _get_version(self, name: str, version: int):
        self._get_model(name)
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise ValueError(f"model version must be a positive integer; got {version!r}") from None
        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            versions = [int(mv.version) for mv in self._versions(name)]
            raise ValueError(
                f"registered model {name!r} has no version {version}; versions: "
                f"{', '.join(map(str, versions)) if versions else '(none)'}"
            ) from None

    def _aliases(self, name: str) -> dict[str, int]:
        return {alias: int(v) for alias, v in (self._get_model(name).aliases or {}).items()}

    def _find_by_key(self, name: str, key: str):
        sha = hashlib.sha256(key.encode()).hexdigest()
        try:
            candidates = self._versions(name, f"tags.{KEY_SHA_TAG} = '{sha}'")
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        matches = [mv for mv in candidates if mv.tags.get(KEY_TAG) == key]
        return matches[0] if matches else None

    def _resolve(self, spec: str):
        """A spec -> (model version entity, how it was chosen)."""
        name, alias, version = parse_spec(spec)
        if version is not None:
            return self._get_version(name, version), f"{name}/{version}"
        aliases = self._aliases(name)  # also checks that the model exists
        if alias is None:
            if DEFAULT_ALIAS in aliases:
                return self._get_version(name, aliases[DEFAULT_ALIAS]), f"{name}@{DEFAULT_ALIAS}"
            alias = "latest"
        if alias.lower() == "latest":
            versions = self._versions(name)
            if not versions:
                raise ValueError(f"registered model {name!r} has no versions yet")
            return versions[-1], f"{name}@latest"
        if alias not in aliases:
            listed = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items()))
            raise ValueError(
                f"registered model {name!r} has no alias {alias!r}; its aliases: "
                f"{listed if listed else '(none)'} (and the built-in 'latest')"
            )
        return self._get_version(name, aliases[alias]), f"{name}@{alias}"

    # ------------------------------------------------------------------ register

    def register_variant(self, record: VariantRecord, registered_model: str) -> int:
        """Log one run and create one version of ``registered_model`` for ``record``; returns the version.

        Idempotent: if a version tagged ``variant_key == record.key`` exists, its number is returned and
        nothing is created. A run left behind by an earlier call that failed before the version was created
        (finished, same key, same registered model) is reused instead of logging a second one.
        """
        _check_name(registered_model)
        if not isinstance(record.key, str) or not record.key:
            raise ValueError(f"VariantRecord.key must be a non-empty string; got {record.key!r}")
        if len(record.key) > 5000:
            raise ValueError(f"VariantRecord.key is {len(record.key)} characters; keep it under 5000 (hash it)")
        if not record.name:
            raise ValueError("VariantRecord.name must be a non-empty string")
        metas = [read_meta(p) for p in record.artifacts]  # clear error if a path is not an artifact
        identity = (record.tags or {}).get(IDENTITY_TAG)
        weights = weights_digest(str(identity), metas) if identity else None
        existing = self._find_by_key(registered_model, record.key)
        if existing is not None:
            _check_same_weights(existing, weights, registered_model, record)
            return int(existing.version)
        if identity:
            self._check_identity(registered_model, str(identity))

        files = {_safe_relpath(n, "VariantRecord.files name"): Path(p) for n, p in (record.files or {}).items()}
        for rel, path in files.items():
            if rel.split("/")[0] == VARIANT_DIR:
                raise ValueError(f"VariantRecord.files name {rel!r} is reserved: '{VARIANT_DIR}/' holds the registered folder")
            if not path.is_file():
                raise FileNotFoundError(f"VariantRecord.files[{rel!r}] = {str(path)!r} is not a file")
        params = {str(k): _param_value(v) for k, v in (record.params or {}).items()}
        for k, v in params.items():
            if len(v) > 6000:
                raise ValueError(f"VariantRecord.params[{k!r}] is {len(v)} characters once serialised; MLflow allows 6000")
        metrics = _float_metrics(record.metrics, "VariantRecord.metrics")
        kind = record.tags.get("kind") or ("variant" if record.artifacts else "baseline")
        sha = hashlib.sha256(record.key.encode()).hexdigest()
        tags = {"kind": kind, "base_model": str(record.base_model), "variant_name": record.name,
                "registered_model": registered_model, "tensorllm_version": __version__,
                **{str(k): str(v) for k, v in (record.tags or {}).items()},
                KEY_TAG: record.key, KEY_SHA_TAG: sha, **({WEIGHTS_TAG: weights} if weights else {})}

        self._ensure_registered_model(registered_model)
        run_id = self._reusable_run(registered_model, record.key, sha)
        if run_id is None:
            self._fail_interrupted_runs(registered_model, record.key, sha)
            run_id, model_id = self._log_variant_run(record, metas, params, files, metrics, tags)
        else:
            model_id = self._run_model_id(run_id)

        version_tags = {**tags, **{METRIC_TAG_PREFIX + k: _metric_tag(v) for k, v in metrics.items()}}
        version_tags.pop("registered_model", None)
        n = len(record.artifacts)
        with _process_tracking_uri(self.tracking_uri):
            mv = self.client.create_model_version(
                registered_model, source=f"models:/{model_id}", run_id=run_id, tags=version_tags, model_id=model_id,
                description=f"{record.name}: {record.base_model} + {n} artifact{'s' if n != 1 else ''}",
            )
        # Another process may have registered the same key meanwhile: keep the oldest version, drop ours.
        first = self._find_by_key(registered_model, record.key)
        if first is not None and int(first.version) < int(mv.version):
            self.client.delete_model_version(registered_model, mv.version)
            return int(first.version)
        return int(mv.version)

    def _check_identity(self, registered_model: str, identity: str) -> None:
        """Refuse a base model other than the one the registered model's versions were made from."""
        try:
            versions = self._versions(registered_model)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return
            raise
        others = sorted({mv.tags[IDENTITY_TAG] for mv in versions if mv.tags.get(IDENTITY_TAG, identity) != identity})
        if others:
            raise ValueError(
                f"registered model {registered_model!r} holds variants of base model identity "
                f"{', '.join(map(repr, others))}, not {identity!r}: register this variant under another name"
            )

    def _runs_of(self, registered_model: str, key: str, sha: str, status: str) -> list[str]:
        """Ids of this variant's runs (by key) in ``status`` (the sha256 tag is filterable; the key is checked)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{KEY_SHA_TAG} = '{sha}' and tags.registered_model = '{registered_model}' "
                          f"and attributes.status = '{status}'",
            max_results=100,
        )
        return [run.info.run_id for run in runs if run.data.tags.get(KEY_TAG) == key]

    def _reusable_run(self, registered_model: str, key: str, sha: str) -> str | None:
        finished = self._runs_of(registered_model, key, sha, "FINISHED")
        return finished[0] if finished else None

    def _fail_interrupted_runs(self, registered_model: str, key: str, sha: str) -> None:
        """Mark FAILED the runs of this variant that a killed process left RUNNING (it never finished them),
        so that no run of an interrupted sweep stays RUNNING forever; the rerun logs a fresh one."""
        for run_id in self._runs_of(registered_model, key, sha, "RUNNING"):
            self.client.set_terminated(run_id, status="FAILED")

    def _log_variant_run(self, record: VariantRecord, metas: list[dict], params: dict[str, str],
                         files: dict[str, Path], metrics: dict[str, float],
                         tags: dict[str, str]) -> tuple[str, str]:
        """Create the run of ``record`` (params, metrics, ``variant/`` folder, files, pyfunc model); (run id, model id)."""
        run = self.client.create_run(self.experiment_id, run_name=record.name, tags=tags)
        run_id = run.info.run_id
        try:
            for chunk in _chunks([Param(k, v) for k, v in params.items()], 100):
                self.client.log_batch(run_id, params=chunk)
            now = _now_ms()
            for chunk in _chunks([Metric(k, v, now, 0) for k, v in metrics.items()], 1000):
                self.client.log_batch(run_id, metrics=chunk)
            with tempfile.TemporaryDirectory(prefix="tensorllm-register-") as tmp:
                folder = Path(tmp) / VARIANT_DIR
                (folder / "artifacts").mkdir(parents=True)
                entries = []
                used: set[str] = set()
                for path, meta in zip(record.artifacts, metas):
                    base = Path(path).resolve().name
                    dest = base
                    i = 2
                    while dest in used:  # two artifacts with the same folder name: keep both
                        dest, i = f"{base}-{i}", i + 1
                    used.add(dest)
                    (folder / "artifacts" / dest).mkdir()
                    for fname in (META_FILE, TENSORS_FILE):
                        shutil.copy2(Path(path) / fname, folder / "artifacts" / dest / fname)
                    entries.append({"dir": f"artifacts/{dest}", "source_path": str(Path(path).resolve()), **meta})
                variant = {"format": VARIANT_FORMAT, "tensorllm_version": __version__, "key": record.key,
                           "name": record.name, "base_model": str(record.base_model), "artifacts": entries}
                (folder / VARIANT_JSON).write_text(json.dumps(variant, indent=2, sort_keys=True))
                self.client.log_artifacts(run_id, str(folder), VARIANT_DIR)
                model_id = self._log_pyfunc(run_id, folder)
                if files:
                    extra = Path(tmp) / "files"
                    for rel, path in files.items():
                        (extra / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, extra / rel)
                    self.client.log_artifacts(run_id, str(extra))
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id, model_id

    def _log_pyfunc(self, run_id: str, variant_dir: Path) -> str:
        """Log the pyfunc model of ``variant_dir`` into run ``run_id``; returns the logged model's id.

        This is what ``mlflow.pyfunc.log_model`` does, but through ``self.client`` only: log_model works on
        the process-wide tracking URI, active run and active experiment, which a Registry must not touch
        (other threads may be using them, and the store is whatever ``tracking_uri`` was given).

        The model formats prompts as the evaluation that scored the variant did: the run's ``chat_template``
        param (``VariantRecord.params``; absent means False, plain prompts, the evaluation's default).
        """
        from mlflow.models import Model

        run = self.client.get_run(run_id)
        logged = self.client.create_logged_model(
            run.info.experiment_id, name=PYFUNC_NAME, source_run_id=run_id, params=dict(run.data.params),
            tags={"tensorllm_version": __version__})
        try:
            with tempfile.TemporaryDirectory(prefix="tensorllm-pyfunc-") as tmp:
                meta = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                             run_id=run_id, model_id=logged.model_id)
                chat = parse_chat_template(run.data.params.get(CHAT_TEMPLATE))
                local = save_pyfunc(Path(tmp) / "model", variant_dir, mlflow_model=meta, chat_template=chat)
                self.client.log_model_artifacts(logged.model_id, str(local))
            self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return logged.model_id

    def _run_model_id(self, run_id: str) -> str:
        """The pyfunc model logged in a reused run; logged now if the run has none (a run of an older version)."""
        outputs = self.client.get_run(run_id).outputs
        for output in reversed(outputs.model_outputs if outputs else []):
            if self.client.get_logged_model(output.model_id).status == LoggedModelStatus.READY:
                return output.model_id
        with tempfile.TemporaryDirectory(prefix="tensorllm-relog-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"runs:/{run_id}/{VARIANT_DIR}", dst_path=tmp,
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri))
            return self._log_pyfunc(run_id, local)

    # ------------------------------------------------------------------ update

    def update_metrics(self, registered_model: str, version: int, metrics: dict[str, float]) -> None:
        """Log more metrics to the version's run and mirror them as version tags ``metric.<name>``."""
        mv = self._get_version(registered_model, version)
        values = _float_metrics(metrics, "update_metrics")
        if not values:
            return
        if not mv.run_id:
            raise ValueError(f"{registered_model}/{version} has no run to log metrics to")
        now = _now_ms()
        for chunk in _chunks([Metric(k, v, now, 0) for k, v in values.items()], 1000):
            self.client.log_batch(mv.run_id, metrics=chunk)
        for k, v in values.items():
            self.client.set_model_version_tag(registered_model, mv.version, METRIC_TAG_PREFIX + k, _metric_tag(v))

    def describe(self, registered_model: str, version: int, text: str) -> None:
        """Set the version's description (shown on its MLflow page): what the variant is and why it matters."""
        if not isinstance(text, str):
            raise TypeError(f"describe: the description must be a string; got {type(text).__name__}")
        mv = self._get_version(registered_model, version)
        self.client.update_model_version(registered_model, mv.version, description=text)

    # ------------------------------------------------------------------ read

    def version_info(self, registered_model: str, version: int) -> dict:
        """version, run_id, params, metrics, tags (of the version), aliases, source, and a few more fields."""
        return self._info(self._get_version(registered_model, version))

    def _info(self, mv) -> dict:
        params: dict = {}
        metrics: dict = {}
        run_tags: dict = {}
        run_name = None
        if mv.run_id:
            try:
                run = self.client.get_run(mv.run_id)
                params, metrics = dict(run.data.params), dict(run.data.metrics)
                run_tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
                run_name = run.info.run_name
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
        aliases = sorted(a for a, v in self._aliases(mv.name).items() if v == int(mv.version))
        return {
            "name": mv.name, "version": int(mv.version), "run_id": mv.run_id, "run_name": run_name,
            "params": params, "metrics": metrics, "tags": dict(mv.tags or {}), "run_tags": run_tags,
            "aliases": aliases, "source": mv.source, "description": mv.description,
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds"),
        }

    def champion(self, registered_model: str, alias: str = DEFAULT_ALIAS) -> dict | None:
        """version_info of the version holding ``alias``; None if the alias is unset or the model is not registered yet."""
        _check_name(registered_model)
        _check_alias(alias)
        try:
            model = self.client.get_registered_model(registered_model)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        version = (model.aliases or {}).get(alias)
        return None if version is None else self.version_info(registered_model, int(version))

    # ------------------------------------------------------------------ decisions

    def set_champion(self, registered_model: str, version: int, decision: dict[str, str],
                     alias: str = DEFAULT_ALIAS) -> None:
        """Point ``alias`` at ``version`` and record why.

        Version tags ``promotion.<key>`` (+ ``promotion.alias``, ``promotion.time``, ``promotion.previous_version``);
        registered-model tags ``last_promotion.*`` and ``last_decision.*`` (with ``promoted=true``).
        Keys of ``decision`` may be given bare (``reason``) or already prefixed (``promotion.reason``).
        """
        _check_alias(alias)
        mv = self._get_version(registered_model, version)
        previous = self._aliases(registered_model).get(alias)
        record = {**_decision_tags(decision), "alias": alias, "time": _now_iso(),
                  "version": str(mv.version), "previous_version": "" if previous is None else str(previous)}
        self.client.set_registered_model_alias(registered_model, alias, mv.version)
        for k, v in record.items():
            if k != "version":
                self.client.set_model_version_tag(registered_model, mv.version, f"promotion.{k}", v)
        self._replace_model_tags(registered_model, "last_promotion.", record)
        self._replace_model_tags(registered_model, "last_decision.", {**record, "promoted": "true"})

    def record_decision(self, registered_model: str, decision: dict[str, str]) -> None:
        """Record a decision that promoted nothing: registered-model tags ``last_decision.*`` (``promoted=false``)."""
        self._get_model(registered_model)
        record = {**_decision_tags(decision), "time": _now_iso(), "promoted": "false"}
        self._replace_model_tags(registered_model, "last_decision.", record)

    def _replace_model_tags(self, name: str, prefix: str, values: dict[str, str]) -> None:
        stale = [k for k in self._get_model(name).tags if k.startswith(prefix) and k[len(prefix):] not in values]
        for k in stale:
            self.client.delete_registered_model_tag(name, k)
        for k, v in values.items():
            self.client.set_registered_model_tag(name, prefix + k, v)

    def log_sweep(self, registered_model: str, summary: dict, files: list[Path],
                  description: str | None = None, params: dict | None = None) -> str:
        """One run named "sweep": scalar entries of ``summary`` as params (text) / metrics (numbers),
        the whole summary as ``summary.json``, and ``files`` (plots, tables) as artifacts; returns the run id.

        ``description`` becomes the run's description (MLflow's tag ``mlflow.note.content``, shown on its page);
        ``params`` (the sweep's parameters) are logged as MLflow params, lists and dicts as JSON.
        """
        _check_name(registered_model)
        if description is not None and not isinstance(description, str):
            raise TypeError(f"log_sweep: description must be a string; got {type(description).__name__}")
        paths = [Path(f) for f in files or []]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"log_sweep: {str(p)!r} is not a file")
        tags = {"kind": "sweep", "registered_model": registered_model, "tensorllm_version": __version__}
        if description:
            tags[NOTE_TAG] = description
        run = self.client.create_run(self.experiment_id, run_name="sweep", tags=tags)
        run_id = run.info.run_id
        try:
            texts, metrics = {}, []
            now = _now_ms()
            for k, v in (summary or {}).items():
                if isinstance(v, bool) or isinstance(v, str):
                    texts[str(k)] = str(v)[:6000]
                elif isinstance(v, (int, float)):
                    metrics.append(Metric(str(k), float(v), now, 0))
            texts.update({str(k): _param_value(v)[:6000] for k, v in (params or {}).items()})
            params = [Param(k, v) for k, v in texts.items()]
            for chunk in _chunks(params, 100):
                self.client.log_batch(run_id, params=chunk)
            for chunk in _chunks(metrics, 1000):
                self.client.log_batch(run_id, metrics=chunk)
            with tempfile.TemporaryDirectory(prefix="tensorllm-sweep-") as tmp:
                summary_file = Path(tmp) / "summary.json"
                summary_file.write_text(json.dumps(summary or {}, indent=2, sort_keys=True, default=str))
                self.client.log_artifact(run_id, str(summary_file))
            for p in paths:
                self.client.log_artifact(run_id, str(p))
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        try:
            self.client.set_registered_model_tag(registered_model, "last_sweep.run_id", run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        return run_id

    def list_models(self) -> list[dict]:
        """One dict per registered model: name, latest_version, versions (how many), aliases (alias -> version), champion, tags."""
        out = []
        for name in self._registered_names():
            model = self.client.get_registered_model(name)  # search results may omit aliases
            versions = [int(mv.version) for mv in self._versions(name)]
            aliases = {a: int(v) for a, v in (model.aliases or {}).items()}
            out.append({"name": name, "latest_version": max(versions) if versions else None,
                        "versions": len(versions), "aliases": aliases, "champion": aliases.get(DEFAULT_ALIAS),
                        "tags": dict(model.tags or {}), "description": model.description})
        return out

    def _variant_uri(self, mv) -> str:
        """``runs:/<run_id>/variant``: the variant folder of a version, whatever its source's layout."""
        if not mv.run_id:
            raise FileNotFoundError(f"{mv.name}/{mv.version} ({mv.source}) has no run: not a tensorllm variant")
        return f"runs:/{mv.run_id}/{VARIANT_DIR}"

    def _download(self, mv, uri: str, dst: str) -> Path:
        try:
            return Path(mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=dst, tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri))
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(
                f"{mv.name}/{mv.version}: cannot download {uri} ({type(exc).__name__}: {exc}); a tensorllm version's "
                f"run holds {VARIANT_DIR}/{VARIANT_JSON}"
            ) from exc

    def _variant_json(self, mv) -> dict:
        with tempfile.TemporaryDirectory(prefix="tensorllm-show-") as tmp:
            local = self._download(mv, f"{self._variant_uri(mv)}/{VARIANT_JSON}", tmp)
            return json.loads(local.read_text())

    def show(self, spec: str) -> dict:
        """version_info of the spec's version plus its lineage (base_model, key, artifacts' metadata)."""
        mv, resolved = self._resolve(spec)
        info = self._info(mv)
        variant = self._variant_json(mv)
        info.update({"spec": spec, "resolved": resolved, "base_model": variant.get("base_model"),
                     "key": variant.get("key"), "variant_name": variant.get("name"),
                     "artifacts": variant.get("artifacts", [])})
        return info

    # ------------------------------------------------------------------ load

    def load(self, spec: str, out_dir: Path) -> Path:
        """Download the spec's variant folder and materialise base model + artifacts as a HF folder in ``out_dir``.

        ``out_dir/tensorllm_variant.json`` records the lineage, with the registry coordinates of the version.
        """
        mv, resolved = self._resolve(spec)
        out_dir = Path(out_dir)
        with tempfile.TemporaryDirectory(prefix="tensorllm-load-") as tmp:
            uri = self._variant_uri(mv)
            local = self._download(mv, uri, tmp)
            if not (local / VARIANT_JSON).is_file():
                raise FileNotFoundError(f"{mv.name}/{mv.version} ({uri}) has no {VARIANT_JSON}: not a tensorllm variant")
            variant = json.loads((local / VARIANT_JSON).read_text())
            paths = [local / entry["dir"] for entry in variant.get("artifacts", [])]
            materialise(variant["base_model"], paths, out_dir)
        lineage_file = out_dir / VARIANT_FILE
        lineage = json.loads(lineage_file.read_text()) if lineage_file.is_file() else {}
        uri = f"models:/{mv.name}/{mv.version}"
        for item, entry in zip(lineage.get("artifacts", []), variant.get("artifacts", [])):
            item["path"] = f"{uri}/{entry['dir']}"
        lineage["registry"] = {"tracking_uri": self.tracking_uri, "model": mv.name, "version": int(mv.version),
                               "spec": spec, "resolved": resolved, "run_id": mv.run_id, "source": mv.source,
                               "key": variant.get("key"), "variant_name": variant.get("name")}
        lineage_file.write_text(json.dumps(lineage, indent=2, sort_keys=True))
        return out_dir
