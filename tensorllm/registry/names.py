"""Names in the registry: constants (tags, aliases, the experiment), registered-model and alias rules, model specs
(``NAME``, ``NAME@ALIAS``, ``NAME/VERSION``).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

DEFAULT_EXPERIMENT = "tensorllm"
DEFAULT_ALIAS = "champion"
VARIANT_DIR = "variant"              # run artifact path of the registered folder
VARIANT_FORMAT = "tensorllm-variant/1"
KEY_TAG = "variant_key"
KEY_SHA_TAG = "variant_key_sha256"   # hex digest of the key: safe to use inside MLflow filter strings
IDENTITY_TAG = "model_identity"      # base-model identity: one per registered model
WEIGHTS_TAG = "weights_sha256"       # the variant's weights: base identity + artifact digests (tensorllm.identity)
PYFUNC_NAME = "model"                # name of the logged pyfunc model in each variant run
NOTE_TAG = "mlflow.note.content"     # where MLflow keeps a run's description
#: The only tags a version carries (from the record's tags, when present): what it is and its identity. Everything
#: else (evaluation settings, code version, ...) is a tag of the version's run, and its numbers are the run's metrics:
#: MLflow's model-versions table lists every version tag in the row.
#: A row is about 37 px + 24 px a tag: 5 tags (6 on a champion) keep it under 200 px (bench/ui_check.py measures it).
VERSION_TAGS = ("variant_name", "evaluated", IDENTITY_TAG, WEIGHTS_TAG, KEY_TAG, KEY_SHA_TAG)
#: The one tag a promoted version gets: "<rule>, <UTC time>" (e.g. "compress, 2026-12-07T20:22:14+00:00"). Its
#: reason is the version's description; the decision's other keys (previous version, alias) are the model's.
PROMOTION_TAG = "promotion"
DECISION_PREFIX = "last_decision."   # the registered model's record of the latest decision (promoted or not)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME_RULE = "letters, digits, '_', '.', '-' (starting with a letter or digit)"
_PAGE = 1000
_PROCESS_URI_LOCK = threading.Lock()


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


def _safe_relpath(name: str, what: str) -> str:
    rel = Path(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"{what} {name!r} must be a relative file name without '..'")
    return rel.as_posix()
