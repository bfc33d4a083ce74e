"""Reading the registry: list the models, show a version's metrics and lineage, load it as a Hugging Face folder."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import mlflow.artifacts
from mlflow.exceptions import MlflowException

from ..artifact import VARIANT_FILE, materialise
from ..pyfunc_model import VARIANT_JSON
from .names import DEFAULT_ALIAS, VARIANT_DIR


class QueryMixin:
    """Reading the registry: list the models, show a version's metrics and lineage, load it as a Hugging Face folder."""

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
