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

import os

# Defaults only: never override what the user set. No telemetry; no progress bars for our small downloads.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# An unreachable tracking server must fail in bounded time: MLflow's defaults (7 retries, exponential
# backoff factor 2, 120 s per request) kept a sweep retrying for many minutes. With these, a refused
# connection fails in seconds and a silent server within about a minute (measured in the tests).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

from ..mlflow_store import default_tracking_uri
from .base import RegistryBase
from .names import (DEFAULT_ALIAS, DEFAULT_EXPERIMENT, IDENTITY_TAG, KEY_SHA_TAG, KEY_TAG, NOTE_TAG, PYFUNC_NAME,
                    VARIANT_DIR, VARIANT_FORMAT, VERSION_TAGS, WEIGHTS_TAG, parse_spec)
from .promotion import PromotionMixin
from .queries import QueryMixin
from .registration import RegistrationMixin
from .sweep_report import SweepReportMixin
from .values import VariantRecord

__all__ = ["DEFAULT_ALIAS", "DEFAULT_EXPERIMENT", "IDENTITY_TAG", "KEY_SHA_TAG", "KEY_TAG", "NOTE_TAG", "PYFUNC_NAME",
           "VARIANT_DIR", "VARIANT_FORMAT", "VERSION_TAGS", "WEIGHTS_TAG", "Registry", "VariantRecord", "default_tracking_uri",
           "parse_spec"]


class Registry(RegistrationMixin, PromotionMixin, QueryMixin, SweepReportMixin, RegistryBase):
    """The MLflow side of the pipeline (tracking store + model registry), on a sqlite store by default.

    One class for its users, built from one file per job: the connection and look-ups (:mod:`.base`),
    registration with crash recovery (:mod:`.registration`), the champion alias (:mod:`.promotion`), a sweep's
    report run (:mod:`.sweep_report`) and queries (:mod:`.queries`).
    """
