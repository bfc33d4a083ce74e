"""A pure-Python wheel of the ``tensorllm`` library as it runs in this process, for registered models to ship.

A registered version's pyfunc model imports ``tensorllm`` where it is loaded. For ``mlflow models serve``
with an environment manager that builds a fresh environment (``virtualenv``, ``uv``), the model's
``requirements.txt`` must name something pip can install: the project is not on an index, so the model
carries this wheel (``wheels/tensorllm-<version>+g<digest>-py3-none-any.whl``) and names it by that path.

The wheel holds the Python modules of the ``tensorllm`` package (``*.py``; not the packaged evaluation
datasets, which a served model never reads and which would add megabytes to every version), read from where
Python imported it, so it is exactly the code that registered the model. Its metadata takes the version and the
dependencies (``Requires-Dist`` without extras) from the installed ``tensorllm`` distribution; the local
version label ``+g<12 hex>`` is a digest of the package files, so two different codes never share a name.
The zip is deterministic (sorted entries, fixed timestamps): the same code gives the same bytes.

Usage::

    path = build_wheel(out_dir)          # -> out_dir/tensorllm-0.1.0+g1a2b3c4d5e6f-py3-none-any.whl
    # pip install --no-deps --target site path; then `import tensorllm` from site
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

import tensorllm

DIST = "tensorllm"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry: fixed, so the bytes are reproducible


def package_files(package_dir: Path | None = None) -> list[Path]:
    """The Python modules of the package (sorted); data files and caches left out."""
    root = Path(package_dir or Path(tensorllm.__file__).parent)
    return sorted(p for p in root.rglob("*.py") if p.is_file() and "__pycache__" not in p.parts)


def _metadata(version: str) -> str:
    """METADATA (core metadata 2.1): name, version, Python and the base requirements of the installed dist."""
    try:
        dist = importlib.metadata.distribution(DIST)
        summary, python = dist.metadata.get("Summary", ""), dist.metadata.get("Requires-Python")
        requires = [r for r in (dist.requires or []) if "extra ==" not in r]
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        summary, python, requires = "", None, []
    lines = ["Metadata-Version: 2.1", f"Name: {DIST}", f"Version: {version}"]
    lines += [f"Summary: {summary}"] if summary else []
    lines += [f"Requires-Python: {python}"] if python else []
    lines += [f"Requires-Dist: {r}" for r in requires]
    return "\n".join(lines) + "\n"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out_dir: str | Path, package_dir: Path | None = None) -> Path:
    """Write the wheel of the ``tensorllm`` package into ``out_dir``; returns its path (see the module docstring)."""
    root = Path(package_dir or Path(tensorllm.__file__).parent)
    files = package_files(root)
    if not (root / "__init__.py").is_file():
        raise FileNotFoundError(f"{root} is not the tensorllm package (no __init__.py)")
    digest = hashlib.sha256()
    entries: list[tuple[str, bytes]] = []
    for path in files:
        name = f"{DIST}/{path.relative_to(root).as_posix()}"
        data = path.read_bytes()
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        entries.append((name, data))
    version = f"{tensorllm.__version__}+g{digest.hexdigest()[:12]}"
    info = f"{DIST}-{version}.dist-info"
    entries.append((f"{info}/METADATA", _metadata(version).encode()))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: tensorllm.wheel\nRoot-Is-Purelib: true\n"
                                     b"Tag: py3-none-any\n"))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))

    out = Path(out_dir) / f"{DIST}-{version}-py3-none-any.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            item = zipfile.ZipInfo(name, date_time=_EPOCH)
            item.external_attr = 0o644 << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(item, data)
    tmp.replace(out)
    return out
