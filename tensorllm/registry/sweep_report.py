"""A sweep's own MLflow run: its summary, plots and report files, with a manifest of their sha256.

The run's files are listed, with size and sha256, in ``tensorllm_manifest.json`` (:mod:`tensorllm.manifest`), and
the manifest's own sha256 is the run's tag :data:`SWEEP_MANIFEST_TAG` (kept in the tracking database, apart from
the artifact store): ``tensorllm verify runs:/RUN_ID`` checks both.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from .. import __version__
from ..artifact import file_sha256
from ..manifest import write_manifest
from .names import NOTE_TAG, _check_name
from .owner import OWNER_TAG, owner_gone, owner_tag
from .values import _chunks, _now_ms, _param_value

#: the sweep run's tag holding the sha256 of its ``tensorllm_manifest.json``
SWEEP_MANIFEST_TAG = "tensorllm_manifest_sha256"


class SweepReportMixin:
    """A sweep's own MLflow run: its summary, plots and report files."""

    def log_sweep(self, registered_model: str, summary: dict, files: list[Path],
                  description: str | None = None, params: dict | None = None) -> str:
        """One run named "sweep": scalar entries of ``summary`` as params (text) / metrics (numbers),
        the whole summary as ``summary.json``, and ``files`` (plots, tables) as artifacts; returns the run id.
        The artifacts are listed with their sha256 in ``tensorllm_manifest.json``, whose own sha256 is the run's tag
        :data:`SWEEP_MANIFEST_TAG` (checked by ``tensorllm verify runs:/RUN_ID``).

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
        self._fail_interrupted_sweeps(registered_model)
        run = self.client.create_run(self.experiment_id, run_name="sweep", tags={**tags, **owner_tag()})
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
                folder = Path(tmp)
                (folder / "summary.json").write_text(json.dumps(summary or {}, indent=2, sort_keys=True, default=str))
                for p in paths:  # as the run's files (a later file of the same name replaces an earlier one)
                    shutil.copyfile(p, folder / p.name)
                manifest = write_manifest(folder)
                self.client.log_artifacts(run_id, str(folder))
                self.client.set_tag(run_id, SWEEP_MANIFEST_TAG, file_sha256(manifest))
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

    def _fail_interrupted_sweeps(self, registered_model: str) -> None:
        """Mark FAILED the sweep runs of ``registered_model`` that a killed sweep left RUNNING (killed while it
        logged its report): the rerun logs its own, and none stays RUNNING forever. A sweep run whose owner
        still runs (a concurrent sweep) is left alone (:mod:`.owner`); one without an owner tag is old, so left too."""
        runs = self.client.search_runs(
            [self.experiment_id], max_results=1000,
            filter_string=f"tags.kind = 'sweep' and tags.registered_model = '{registered_model}' "
                          "and attributes.status = 'RUNNING'")
        for run in runs:
            tag = run.data.tags.get(OWNER_TAG)
            if tag and owner_gone(tag):
                self.client.set_terminated(run.info.run_id, status="FAILED")
