"""Perplexity on held-out natural text: does a compressed model still model language, not only recall facts?

The QA metrics (accuracy, answer loss) look at a few answer tokens after a prompt; a compression can keep them and
still wreck running text. This module measures the model's next-token loss on a fixed slice of a novel that no
calibration or selection set uses (Jane Austen's *Persuasion*, ``data/files/austen/``, see its SOURCE.md):

* the corpus is tokenised once, without special tokens, and cut from its start into ``n = tokens // window``
  non-overlapping windows of ``window`` tokens (``window`` capped at the model's context); each window is one
  forward pass from an empty context, so each scores its ``window - 1`` next-token predictions;
* the mean negative log-likelihood (NLL, nats per token, float32 log-softmax) of each window, their mean
  ``mean_nll`` (every window scores the same number of tokens, so this is the mean over all scored tokens),
  and ``perplexity = exp(mean_nll)``;
* a 95% Student-t interval over the windows on the mean NLL, mapped through ``exp`` to perplexity (windows are
  the independent-enough units: tokens inside one window are strongly correlated);
* :func:`compare_perplexity`: the *paired* comparison of a variant with its base on the same windows: the mean
  per-window NLL difference with its t interval, i.e. the perplexity ratio ``exp(diff)`` and its interval. The
  pairing removes the between-window spread (dialogue vs narration), so the ratio's interval is far narrower
  than either perplexity's. The verdict: the ratio's upper end within ``1 + margin`` (default +10%).

Everything is deterministic (no sampling, fixed windows); the result carries the corpus's sha256 and a digest of
the token ids scored, so it can be cached by content and two results are compared only on identical tokens.

Usage::

    from tensorllm.evaluation.perplexity import perplexity, perplexity_of, compare_perplexity

    base = perplexity_of("smollm2-135m")                                   # 16,384 tokens, windows of 512
    variant = perplexity_of("smollm2-135m", ["runs/artifacts/.../r64x32x2"])  # or an export folder, no artifacts
    cmp = compare_perplexity(base, variant)
    print(base.sentence(), cmp.sentence(), sep="\\n")
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import progress
from .data.registry import default_data_dir
from .runtime import model_device, model_dtype

log = logging.getLogger(__name__)

#: the held-out corpus, relative to the data folder (``TENSORLLM_DATA_DIR`` or the package's ``files/``)
DEFAULT_CORPUS = "austen/persuasion.txt"
#: tokens read by default: 32 windows of 512 on SmolLM2, about a minute on 2 CPU cores
DEFAULT_TOKENS = 16_384
#: window length (tokens) by default; capped at the model's context (``max_position_embeddings``)
DEFAULT_WINDOW = 512
#: the goal for a compressed model: perplexity at most 10% above the base's (upper end of the paired interval)
DEFAULT_PPL_MARGIN = 0.10
DEFAULT_BATCH = 2  # windows per forward pass: 2 x 512 x 49,152 float32 logits = 200 MB on SmolLM2

#: entered around the forward of windows ``start:stop`` (see :func:`window_nll`)
WindowHook = Callable[[int, int], AbstractContextManager]


@dataclass(frozen=True)
class Corpus:
    """A plain-text corpus: its name (path relative to the data folder, or the file name), text and sha256."""

    name: str
    path: Path
    text: str
    digest: str


def load_corpus(corpus: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> Corpus:
    """Read ``corpus``: a path relative to the data folder (default :data:`DEFAULT_CORPUS`, read from the package's
    own copy when a ``TENSORLLM_DATA_DIR`` of other data lacks it) or any UTF-8 file."""
    name = str(corpus) if corpus is not None else DEFAULT_CORPUS
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    path = Path(name).expanduser()
    if not path.is_file():
        path = root / name
    if not path.is_file() and corpus is None and data_dir is None:  # a TENSORLLM_DATA_DIR of your own datasets
        path = Path(__file__).resolve().parent / "data" / "files" / name  # need not copy the novel: the shipped one
    if not path.is_file():
        raise FileNotFoundError(f"perplexity corpus {name!r} not found (as a file, or under the data folder {root}); "
                                f"the shipped one is {DEFAULT_CORPUS!r}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"perplexity corpus {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text.strip():
        raise ValueError(f"perplexity corpus {path} is empty")
    return Corpus(name=name, path=path, text=text, digest=hashlib.sha256(raw).hexdigest())


def context_length(model) -> int | None:
    """The longest sequence the model's positions allow (``max_position_embeddings`` or ``n_positions``), if known."""
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_settings(tokens: int, window: int = DEFAULT_WINDOW, margin: float = DEFAULT_PPL_MARGIN) -> None:
    """Refuse a bad budget, window or margin with a one-line error (callers check before hours of other work)."""
    for label, value, least in (("tokens", tokens, 2), ("window", window, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"perplexity {label} must be an integer >= {least}; got {value!r}")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"perplexity margin must be a fraction >= 0 (0.10 = +10%); got {margin!r}")


def corpus_windows(tokenizer, corpus: Corpus, tokens: int = DEFAULT_TOKENS, window: int = DEFAULT_WINDOW
                   ) -> tuple[torch.Tensor, list[str]]:
    """``(ids [n_windows, window], notes)``: the corpus tokenised (no special tokens), cut from its start into
    ``tokens // window`` non-overlapping windows (at least one). A budget beyond the corpus is clipped and said
    so in ``notes``; a corpus shorter than one window is an error."""
    check_settings(tokens, window)
    ids = tokenizer(corpus.text, add_special_tokens=False, verbose=False)["input_ids"]
    notes = []
    n_windows = max(1, tokens // window)
    if len(ids) < window:
        raise ValueError(f"perplexity corpus {corpus.name} has {len(ids)} tokens, fewer than one window of {window}")
    if n_windows * window > len(ids):
        notes.append(f"token budget {tokens:,} clipped to the corpus: {len(ids) // window} windows of {window} "
                     f"({len(ids):,} tokens in {corpus.name})")
        n_windows = len(ids) // window
    if tokens % window:
        notes.append(f"token budget {tokens:,} is not a multiple of the window {window}: {n_windows} windows "
                     f"({n_windows * window:,} tokens)")
    return torch.tensor(ids[: n_windows * window], dtype=torch.long).view(n_windows, window), notes


def window_nll(model, ids: torch.Tensor, batch_size: int = DEFAULT_BATCH, around: WindowHook | None = None
               ) -> list[float]:
    """Mean next-token NLL (nats) of each row of ``ids`` under ``model`` (float32 log-softmax, no padding).

    ``around(start, stop)``, if given, is a context manager entered around the forward of rows ``start:stop``
    (recording or replaying the hidden states entering a layer: :mod:`.perplexity_prefix`)."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    device = model_device(model)
    out: list[float] = []
    progress.expect("perplexity", len(ids))
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            batch = ids[start: start + batch_size].to(device)
            with around(start, start + len(batch)) if around is not None else nullcontext():
                logits = model(input_ids=batch, use_cache=False).logits[:, :-1]
            targets = batch[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                                    reduction="none")  # rows contiguous: 3x faster than (B, V, L)
            out.extend(nll.view(targets.shape).double().mean(dim=1).tolist())
            progress.advance("perplexity", len(batch))
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"perplexity: {len(bad)} of {len(out)} windows have a non-finite loss (the model "
                                 "produces NaN or inf logits)")
    return out


def t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` degrees of freedom: the finite sums of Abramowitz & Stegun 26.7.3-4
    in theta = atan(t / sqrt(df)) (exact for integer ``df``; no scipy needed)."""
    theta = math.atan(t / math.sqrt(df))
    c2, term = math.cos(theta) ** 2, 1.0
    if df % 2 == 0:  # sin(theta) [1 + 1/2 cos^2 + 1.3/(2.4) cos^4 + ... + 1.3..(df-3)/(2.4..(df-2)) cos^(df-2)]
        total = 1.0
        for k in range(2, df, 2):
            term *= c2 * (k - 1) / k
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2 * theta / math.pi
    total = 1.0  # odd: 2/pi [theta + sin cos (1 + 2/3 cos^2 + 2.4/(3.5) cos^4 + ... )]
    for k in range(3, df - 1, 2):
        term *= c2 * (k - 1) / k
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95% intervals), by bisection
    of :func:`t_central_mass` to 1e-12 (the test checks it against scipy)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be an integer >= 1; got {df!r}")
    lo, hi = 1.959963984540054, 13.0  # the normal quantile and t(1) = 12.706 bracket every df
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_central_mass(mid, df) < 0.95 else (lo, mid)
    return (lo + hi) / 2


def t_interval(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """Mean of ``values`` and its 95% Student-t interval ``mean +- t(n-1) s / sqrt(n)`` ((nan, nan) for n < 2)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return math.nan, (math.nan, math.nan)
    mean = math.fsum(xs) / n
    if n == 1:
        return mean, (math.nan, math.nan)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return mean, (mean - half, mean + half)


def _exp(x: float) -> float:
    return math.exp(x) if math.isfinite(x) and x < 700 else (math.inf if x == x else math.nan)


@dataclass
class PerplexityResult:
    """One model's perplexity on the corpus, with the per-window NLLs that a paired comparison needs.

    ``corpus_digest`` (sha256 of the corpus file) and ``tokens_digest`` (of the token ids scored) make it a
    cacheable value: the same model, corpus, tokenizer, budget and window give the same digests and numbers."""

    corpus: str
    corpus_digest: str
    tokens_digest: str
    window: int
    n_windows: int
    n_tokens: int  # tokens read, n_windows x window
    scored_tokens: int  # next-token predictions scored, n_windows x (window - 1)
    mean_nll: float  # nats per token
    mean_nll_ci: tuple[float, float]
    perplexity: float
    perplexity_ci: tuple[float, float]
    window_nll: list[float]
    dtype: str
    device: str
    seconds: float
    model: str = ""
    notes: list[str] = field(default_factory=list)
    #: layers ``< replayed_from_layer`` were not run: their output was replayed from the base's (None: full forward)
    replayed_from_layer: int | None = None
    #: the base's inputs to a layer recorded with this result (:mod:`.perplexity_prefix`): file, its sha256, the
    #: content identity (what a variant's cache key names) and the layer; None when nothing was recorded
    prefix_file: str | None = None
    prefix_sha256: str | None = None
    prefix_identity: str | None = None
    prefix_layer: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PerplexityResult:
        """The inverse of :meth:`to_dict` (a cached result read back from JSON)."""
        data = dict(data)
        for key in ("mean_nll_ci", "perplexity_ci"):
            data[key] = tuple(float("nan") if v is None else v for v in data[key])
        return cls(**data)

    def sentence(self) -> str:
        lo, hi = self.perplexity_ci
        return (f"perplexity {self.perplexity:.3f} [95% {lo:.3f}, {hi:.3f}] on {self.corpus} ({self.n_windows} windows "
                f"of {self.window} tokens, mean NLL {self.mean_nll:.4f} nats/token, {self.dtype}, {self.seconds:.0f}s)")


def perplexity(model, tokenizer, *, tokens: int = DEFAULT_TOKENS, window: int = DEFAULT_WINDOW,
               corpus: str | os.PathLike | Corpus | None = None, batch_size: int = DEFAULT_BATCH,
               label: str = "", windows_hook: Callable[[torch.Tensor, str, int], WindowHook | None] | None = None
               ) -> PerplexityResult:
    """Perplexity of a loaded ``model`` (any causal LM; evaluated where and in the dtype it is) on ``corpus``.

    ``tokens`` is the budget read (``tokens // window`` windows), ``window`` the window length (capped at the
    model's context, said in ``notes``), ``corpus`` a path or a :class:`Corpus` (default :data:`DEFAULT_CORPUS`).
    ``windows_hook(ids, tokens_digest, batch_size)``, once the windows are cut, gives :func:`window_nll`'s
    ``around`` (how :mod:`.perplexity_prefix` records or replays a layer's inputs; it checks the digest).
    """
    start = time.perf_counter()
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    check_settings(tokens, window)
    notes = []
    context = context_length(model)
    if context is not None and window > context:
        notes.append(f"window {window} capped at the model's context {context}")
        window = context
    ids, more = corpus_windows(tokenizer, corpus, tokens, window)
    notes += more
    digest = tokens_digest(ids)
    values = window_nll(model, ids, batch_size, windows_hook(ids, digest, batch_size) if windows_hook else None)
    mean, (lo, hi) = t_interval(values)
    result = PerplexityResult(
        corpus=corpus.name, corpus_digest=corpus.digest,
        tokens_digest=digest, window=window,
        n_windows=len(values), n_tokens=ids.numel(), scored_tokens=len(values) * (window - 1), mean_nll=mean,
        mean_nll_ci=(lo, hi), perplexity=_exp(mean), perplexity_ci=(_exp(lo), _exp(hi)), window_nll=values,
        dtype=str(model_dtype(model)).removeprefix("torch."), device=str(model_device(model)),
        seconds=time.perf_counter() - start, model=label, notes=notes,
    )  # fmt: skip
    log.info("%s: %s", label or "model", result.sentence())
    return result


def tokens_digest(ids: torch.Tensor) -> str:
    """sha256 of the token ids scored (little-endian int64, row by row): what pairs two results."""
    return hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest()


def perplexity_of(model_folder: str | os.PathLike, artifact_paths: Sequence[str | os.PathLike] = (), *,
                  tokens: int = DEFAULT_TOKENS, window: int = DEFAULT_WINDOW,
                  corpus: str | os.PathLike | Corpus | None = None, dtype: torch.dtype | None = None,
                  device: str = "cpu", batch_size: int = DEFAULT_BATCH, record_layer: int | None = None,
                  prefix_dir: str | os.PathLike | None = None, prefix=None) -> PerplexityResult:
    """Perplexity of a model folder (a name such as ``smollm2-135m``, a base folder or an export) with
    ``artifact_paths`` applied (factorised where that pays off, as the export does; none: the model as it is).

    ``dtype`` defaults to float32 on the CPU (the base's dtype on a GPU), the same for a base and its variants,
    so their results pair. The label of the result names the folder and the artifacts.

    Prefix replay (:mod:`.perplexity_prefix`): ``record_layer=L`` with ``prefix_dir`` also saves the hidden
    states entering layer ``L`` on these windows to a content-keyed file there (named in the result's
    ``prefix_file`` / ``prefix_identity``); ``prefix`` (such a file, or a loaded
    :class:`~.perplexity_prefix.PerplexityPrefix`) replays them, so a variant that edits only layers >= ``L``
    runs only those layers, with the same numbers (``replayed_from_layer`` says so). A prefix recorded on other
    tokens, dtype, device or prefix weights, or artifacts that edit a layer < ``L``, are refused."""
    from ..checkpoint import stored_dtype
    from ..export import variant_model
    from ..models import resolve_model
    from .perplexity_prefix import measure_with_prefix, prepare_prefix
    from .runtime import default_dtype

    folder = resolve_model(model_folder)
    dtype = dtype or default_dtype(device, base=stored_dtype(folder))
    if prefix is not None:  # refused before the model is loaded: other artifacts' layers, dtype, or a recording too
        prefix = prepare_prefix(prefix, artifact_paths, dtype, record_layer)
    model, tokenizer, _ = variant_model(str(model_folder), list(artifact_paths), "factorised", device=device,
                                        dtype=dtype)
    label = str(model_folder) + "".join(f" + {Path(p).name}" for p in artifact_paths)
    kwargs = dict(tokens=tokens, window=window, corpus=corpus, batch_size=batch_size, label=label)
    try:
        if record_layer is not None or prefix is not None:
            return measure_with_prefix(model, tokenizer, record_layer=record_layer, prefix_dir=prefix_dir,
                                       prefix=prefix, **kwargs)
        return perplexity(model, tokenizer, **kwargs)
    finally:
        del model


@dataclass
class PerplexityComparison:
    """A variant against its base on the same windows: the perplexity ratio with its paired 95% interval."""

    corpus: str
    corpus_digest: str
    n_windows: int
    window: int
    base_perplexity: float
    base_perplexity_ci: tuple[float, float]
    variant_perplexity: float
    variant_perplexity_ci: tuple[float, float]
    nll_diff: float  # variant - base, mean over windows, nats per token
    nll_diff_ci: tuple[float, float]
    ratio: float  # variant / base perplexity, exp(nll_diff)
    ratio_ci: tuple[float, float]
    margin: float
    within_margin: bool  # the ratio's upper 95% end <= 1 + margin

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        lo, hi = self.ratio_ci
        verdict = (f"within +{self.margin:.0%}" if self.within_margin else f"NOT shown within +{self.margin:.0%}")
        return (f"perplexity on {self.corpus} ({self.n_windows} x {self.window} tokens): base "
                f"{self.base_perplexity:.3f}, variant {self.variant_perplexity:.3f}, ratio {self.ratio:.4f} "
                f"[95% {lo:.4f}, {hi:.4f}] ({self.ratio - 1:+.1%}): {verdict}")


def compare_perplexity(base: PerplexityResult, variant: PerplexityResult, margin: float = DEFAULT_PPL_MARGIN
                       ) -> PerplexityComparison:
    """Pair ``variant`` with ``base`` window by window (the same tokens, checked by digest); ratio and verdict."""
    check_settings(base.n_tokens, base.window, margin)
    if (base.tokens_digest, base.window) != (variant.tokens_digest, variant.window):
        raise ValueError(f"perplexity results are not on the same tokens (base {base.corpus} {base.n_windows}x"
                         f"{base.window}, variant {variant.corpus} {variant.n_windows}x{variant.window}; a different "
                         "corpus, budget, window or tokenizer): they cannot be paired")
    diff, (lo, hi) = t_interval([v - b for b, v in zip(base.window_nll, variant.window_nll)])
    if all(v == b for b, v in zip(base.window_nll, variant.window_nll)):
        lo = hi = 0.0  # identical models: the interval is the point, even with one window
    return PerplexityComparison(
        corpus=base.corpus, corpus_digest=base.corpus_digest, n_windows=base.n_windows, window=base.window,
        base_perplexity=base.perplexity, base_perplexity_ci=base.perplexity_ci,
        variant_perplexity=variant.perplexity, variant_perplexity_ci=variant.perplexity_ci,
        nll_diff=diff, nll_diff_ci=(lo, hi), ratio=_exp(diff), ratio_ci=(_exp(lo), _exp(hi)), margin=float(margin),
        within_margin=bool(math.isfinite(hi) and _exp(hi) <= 1 + margin),
    )  # fmt: skip
