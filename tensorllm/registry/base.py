"""The registry's connection: one MLflow client on one store, its experiment, and version look-ups (by number,
alias, key or spec) that registration, promotion and queries share.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import mlflow
import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ..mlflow_store import default_tracking_uri, store_creation_lock
from .names import (_PAGE, _PROCESS_URI_LOCK, DEFAULT_ALIAS, DEFAULT_EXPERIMENT, KEY_SHA_TAG, KEY_TAG, _check_name,
                    parse_spec)


@contextlib.contextmanager
def _process_tracking_uri(uri: str):
    """Point MLflow's process-wide tracking URI at ``uri`` for the block, then restore it exactly.

    Only for ``create_model_version`` from a ``models:/<model_id>`` source on a database store: MLflow 3.17's
    sqlalchemy registry store looks the logged model up with a default ``MlflowClient()`` (a TODO in its
    source), i.e. through the process-wide URI, whatever store the calling client uses. Public calls only:
    what was set (``mlflow.is_tracking_uri_set``/``get_tracking_uri``) and ``MLFLOW_TRACKING_URI``, which
    ``set_tracking_uri`` also writes, come back even if the block fails; a URI that only the variable held is
    restored as the variable alone.
    """
    with _PROCESS_URI_LOCK:
        previous_env = os.environ.get("MLFLOW_TRACKING_URI")
        previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
        if previous == previous_env:
            previous = None  # the variable carries it: restoring the variable is restoring it
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)  # None also removes the variable it wrote
            if previous_env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = previous_env


class RegistryBase:
    """The MLflow client on one store, the experiment, and the look-ups every part of the registry uses."""

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
