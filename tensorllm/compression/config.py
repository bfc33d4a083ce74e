"""``tensorllm compress``'s parameters as one typed record: the command line, the ``--config`` file, the schema.

A configuration file (YAML or JSON) holds any of these fields; options given on the command line override
it; ``--print-config`` writes the effective configuration (file, options, defaults) as YAML, which
``tensorllm compress --config`` repeats. The file's JSON schema is published as
``docs/compress-config.schema.json`` (:func:`config_schema`).

Usage::

    tensorllm compress --config compress.yaml                    # model, target_ratio, out, ... in the file
    tensorllm compress --config compress.yaml --target-ratio 3   # the option wins
    tensorllm compress smollm2-135m --target-ratio 2 --out runs/smollm2-2x --print-config > compress.yaml
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config_file import dump_yaml, read_mapping
from ..tensorise import DEFAULT_GROUPING, Grouping
from .plan import DEFAULT_PROMPTS
from .verify import DEFAULT_MARGIN, DEFAULT_PPL_MARGIN, DEFAULT_TOKENS

Rank = int | float  # an integer rank, or a fraction of (d_model, d_head, slices)


class CompressConfig(BaseModel):
    """What ``tensorllm compress`` (and :func:`tensorllm.compress`) takes; field order is the printed order."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model name (smollm2-135m), local Hugging Face folder or hub id")
    target_ratio: float = Field(gt=1, description="whole-model attention parameters before / after, at least (e.g. 2)")
    out: str = Field(description="the export folder to write (with compress_report.json)")
    ranks: list[tuple[Rank, Rank, Rank]] | None = Field(
        default=None, description="rank configurations of the grid, each [R1, R2, R3] as integers or fractions "
                                  "(default: the built-in grid)")
    grouping: Grouping = Field(default=DEFAULT_GROUPING, description="GQA/MQA grouping of the heads")
    layers: list[int] | None = Field(default=None, description="only these layers may change (default: all)")
    dataset: str = Field(default="qa_wikidata", description="validation prompts for calibration and verification: a "
                                                            "built-in name or your own data (a .jsonl/.json/.csv file "
                                                            "or a .yaml spec; docs/evaluation.md#your-own-data)")
    prompts: int = Field(default=DEFAULT_PROMPTS, ge=1, description="calibration prompts")
    val_limit: int = Field(default=200, ge=1, description="validation items for the verification")
    generate: bool = Field(default=False, description="verify with greedy-generation accuracy (slower) instead of "
                                                      "first-token top-1")
    margin: float = Field(default=DEFAULT_MARGIN, ge=0, description="non-inferiority margin on accuracy")
    verify: bool = Field(default=True, description="compare the result with the base (paired)")
    perplexity_tokens: int = Field(default=DEFAULT_TOKENS, ge=0, description="token budget of the perplexity on "
                                   "held-out text (0 skips it)")
    perplexity_margin: float = Field(default=DEFAULT_PPL_MARGIN, gt=0, description="the perplexity goal: the "
                                     "ratio to the base within 1 + this")
    artifacts: str | None = Field(default=None, description="folder for the per-layer artifacts (default: next to "
                                                            "out; reused)")

    @field_validator("target_ratio", "margin")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number; got {value!r}")
        return value

    @field_validator("ranks", mode="before")
    @classmethod
    def _three_ranks(cls, value):
        for item in value or []:
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                raise ValueError(f"each rank configuration is [R1, R2, R3] (integers or fractions); got {item!r}")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        """A data file or spec as an absolute path (relative to the working folder), so a printed file repeats
        the run from anywhere; a built-in name unchanged."""
        from ..evaluation.data.user_spec import canonical_reference

        return canonical_reference(value)

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) < 0):
            raise ValueError(f"must be non-empty layer indices >= 0; got {value!r}")
        return value


def read_compress_config(path: str | Path) -> dict:
    """The parameters a configuration file holds (validated with the command line's by :func:`build_config`)."""
    return read_mapping(path, allowed=CompressConfig.model_fields)


def build_config(params: dict) -> CompressConfig:
    """``CompressConfig(**params)``, or a ValueError naming the first bad field, what was wrong and what is allowed."""
    unknown = sorted(set(params) - set(CompressConfig.model_fields))
    if unknown:
        raise ValueError(f"config: unknown parameter(s) {unknown}; allowed: {', '.join(CompressConfig.model_fields)}")
    try:
        return CompressConfig(**params)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "parameters"
        name = str(error["loc"][0]) if error["loc"] else ""
        info = CompressConfig.model_fields.get(name)
        if error["type"] == "missing" and len(error["loc"]) == 1:
            flag = {"model": "MODEL"}.get(name, "--" + name.replace("_", "-"))
            raise ValueError(f"{name}: required; give {flag} on the command line or {name}: in the --config file "
                             f"({info.description if info else name})") from None
        message = error["msg"].removeprefix("Value error, ")
        if "allowed:" in message:  # the validator's own message already names the value and what is allowed
            raise ValueError(f"{field}: {message}") from None
        allowed = f"; allowed: {info.description}" if info is not None and info.description else ""
        raise ValueError(f"{field}: {message[0].lower()}{message[1:]} (got {error.get('input')!r}){allowed}") from None


def config_yaml(config: CompressConfig) -> str:
    """The effective configuration as YAML, every field included, in the config's field order."""
    return dump_yaml(config.model_dump(mode="json"),
                     "# tensorllm compress configuration: `tensorllm compress --config THIS_FILE` repeats the run")


def config_schema() -> dict:
    """The JSON schema of a configuration file (published as docs/compress-config.schema.json)."""
    return CompressConfig.model_json_schema()
