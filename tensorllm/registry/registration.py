"""Registering a variant once per key, with crash recovery (a run left RUNNING by a killed process is
failed and redone), its pyfunc model and its metrics.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import mlflow.artifacts
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param
from mlflow.exceptions import MlflowException

from .. import __version__
from ..artifact import META_FILE, TENSORS_FILE, read_meta
from ..identity import weights_digest
from ..pyfunc_model import CHAT_TEMPLATE, VARIANT_JSON, parse_chat_template, save_pyfunc
from ..mlflow_store import registration_lock
from .base import _process_tracking_uri
from .names import (IDENTITY_TAG, KEY_SHA_TAG, KEY_TAG, PYFUNC_NAME, VARIANT_DIR, VARIANT_FORMAT, VERSION_TAGS,
                    WEIGHTS_TAG, _check_name, _safe_relpath)
from .owner import OWNER_TAG, owner_gone, owner_tag
from .values import VariantRecord, _check_same_weights, _chunks, _float_metrics, _now_ms, _param_value

#: The logged model's tag that lists its registered versions (JSON ``[{"name", "version"}]``): MLflow's UI shows a
#: logged model as "Not registered" without it. ``mlflow.register_model`` and the tracking server set it; a client
#: on a database store that calls ``create_model_version`` must set it itself.
MODEL_VERSIONS_TAG = "mlflow.modelVersions"


class RegistrationMixin:
    """Registering a variant once per key, with crash recovery (a run left RUNNING by a killed process is
    failed and redone), its pyfunc model and its metrics."""

    def register_variant(self, record: VariantRecord, registered_model: str) -> int:
        """Log one run and create one version of ``registered_model`` for ``record``; returns the version.

        The run holds everything (params, metrics, all tags); the version carries only :data:`VERSION_TAGS`
        (what it is, its identity and key) and is linked to the run's logged model both ways. The metrics are
        linked to that logged model too (MLflow 3's ``model_id`` on each metric), so its page shows them.

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
        with registration_lock(self.tracking_uri, registered_model):  # identical sweeps at once: one run per key
            return self._register_once(record, registered_model, metas, identity, weights)

    def _register_once(self, record: VariantRecord, registered_model: str, metas: list[dict], identity,
                       weights: str | None) -> int:
        """The body of :meth:`register_variant`, under its lock."""
        existing = self._find_by_key(registered_model, record.key)
        if existing is not None:
            _check_same_weights(existing, weights, registered_model, record)
            self._link_logged_model(existing)  # a process killed after creating the version left it unlinked
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

        version_tags = {k: tags[k] for k in VERSION_TAGS if k in tags}
        n = len(record.artifacts)
        with _process_tracking_uri(self.tracking_uri):
            mv = self.client.create_model_version(
                registered_model, source=f"models:/{model_id}", run_id=run_id, tags=version_tags, model_id=model_id,
                description=f"{record.name}: {record.base_model} + {n} artifact{'s' if n != 1 else ''}",
            )
        # Another process may have registered the same key meanwhile: keep the oldest version, drop ours.
        first = self._find_by_key(registered_model, record.key)
        if first is not None and int(first.version) < int(mv.version):  # (a process on another machine: no lock)
            self.client.delete_model_version(registered_model, mv.version)
            if first.run_id != run_id:
                self.client.delete_run(run_id)  # its run too: one active run per registered key
            self._link_logged_model(first)
            return int(first.version)
        self._link_logged_model(mv)
        return int(mv.version)

    def _link_logged_model(self, mv) -> None:
        """Record ``mv`` in its logged model's :data:`MODEL_VERSIONS_TAG` (idempotent), as ``mlflow.register_model``
        does: the logged model's page then lists the version instead of offering to register it."""
        model_id = _logged_model_id(mv)
        if model_id is None:
            return
        try:
            logged = self.client.get_logged_model(model_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return
        entry = {"name": mv.name, "version": str(mv.version)}
        try:
            listed = json.loads(logged.tags.get(MODEL_VERSIONS_TAG) or "[]")
        except json.JSONDecodeError:
            listed = []
        if entry not in listed:
            self.client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(listed + [entry])})

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
        so that no run of an interrupted sweep stays RUNNING forever; the rerun logs a fresh one. A run whose
        owner still runs (another machine's sweep on a shared server) is left to it (:mod:`.owner`)."""
        for run_id in self._runs_of(registered_model, key, sha, "RUNNING"):
            if owner_gone(self.client.get_run(run_id).data.tags.get(OWNER_TAG)):
                self.client.set_terminated(run_id, status="FAILED")

    def _log_variant_run(self, record: VariantRecord, metas: list[dict], params: dict[str, str],
                         files: dict[str, Path], metrics: dict[str, float],
                         tags: dict[str, str]) -> tuple[str, str]:
        """Create the run of ``record`` (params, metrics, ``variant/`` folder, files, pyfunc model); (run id, model id).

        The metrics are logged once the pyfunc model exists, each with its ``model_id``: they are then the run's
        and the logged model's at once (one write; the run's values and history are as they were)."""
        run = self.client.create_run(self.experiment_id, run_name=record.name, tags={**tags, **owner_tag()})
        run_id = run.info.run_id
        try:
            for chunk in _chunks([Param(k, v) for k, v in params.items()], 100):
                self.client.log_batch(run_id, params=chunk)
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
                self._log_metrics(run_id, metrics, model_id)
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
        """Log more metrics to the version's run and its logged model (the version shows its run's metrics;
        nothing is copied to it)."""
        mv = self._get_version(registered_model, version)
        values = _float_metrics(metrics, "update_metrics")
        if not values:
            return
        if not mv.run_id:
            raise ValueError(f"{registered_model}/{version} has no run to log metrics to")
        self._log_metrics(mv.run_id, values, _logged_model_id(mv))

    def _log_metrics(self, run_id: str, metrics: dict[str, float], model_id: str | None) -> None:
        """Log ``metrics`` (step 0, one timestamp) to run ``run_id`` and, with a ``model_id``, to that logged model:
        MLflow 3 records a metric that names a model in the run's metrics and in the model's (its UI page's
        "Metrics"), both from one ``log_batch``."""
        now = _now_ms()
        for chunk in _chunks([Metric(k, v, now, 0, model_id=model_id) for k, v in metrics.items()], 1000):
            self.client.log_batch(run_id, metrics=chunk)

    def describe(self, registered_model: str, version: int, text: str) -> None:
        """Set the version's description (shown on its MLflow page): what the variant is and why it matters."""
        if not isinstance(text, str):
            raise TypeError(f"describe: the description must be a string; got {type(text).__name__}")
        mv = self._get_version(registered_model, version)
        self.client.update_model_version(registered_model, mv.version, description=text)

    # ------------------------------------------------------------------ read


def _logged_model_id(mv) -> str | None:
    """The logged model a version was made from: its ``model_id`` (a tracking server keeps it; MLflow 3.17's
    database registry store does not), else its source ``models:/<model_id>`` (``models:/NAME/VERSION`` is not one)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    rest = (mv.source or "").removeprefix("models:/") if (mv.source or "").startswith("models:/") else ""
    return rest if rest and "/" not in rest and "@" not in rest else None
