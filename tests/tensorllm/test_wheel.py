"""The wheel of the tensorllm package that registered models carry (tensorllm.wheel)."""

import shutil
import zipfile
from pathlib import Path

import pytest

import tensorllm
from tensorllm.wheel import build_wheel, package_files


def test_wheel_holds_the_package_and_metadata(tmp_path):
    wheel = build_wheel(tmp_path)
    assert wheel.parent == tmp_path and wheel.name.startswith(f"tensorllm-{tensorllm.__version__}+g")
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(f"tensorllm-{version}.dist-info/METADATA").decode()
        record = zf.read(f"tensorllm-{version}.dist-info/RECORD").decode()
        assert zf.read("tensorllm/pyfunc_model.py") == (Path(tensorllm.__file__).parent / "pyfunc_model.py").read_bytes()
    root = Path(tensorllm.__file__).parent
    code = {f"tensorllm/{p.relative_to(root).as_posix()}" for p in package_files()}
    assert "tensorllm/evaluation/prompt_format.py" in code and not any("__pycache__" in n for n in names)
    assert all(n.endswith(".py") for n in code)  # the modules, not package data such as the datasets
    assert names == code | {f"tensorllm-{version}.dist-info/{f}" for f in ("METADATA", "WHEEL", "RECORD")}
    assert f"Version: {version}" in meta and "Requires-Dist: torch" in meta  # deps of the installed project
    assert "extra ==" not in meta  # dev extras are not the model's business
    assert len(record.splitlines()) == len(names)  # one line per file, RECORD itself included


def test_same_code_same_bytes_other_code_other_name(tmp_path):
    first, second = build_wheel(tmp_path / "a"), build_wheel(tmp_path / "b")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()  # reproducible
    copy = tmp_path / "src" / "tensorllm"
    shutil.copytree(Path(tensorllm.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "notes.txt").write_text("not code")
    assert build_wheel(tmp_path / "c", package_dir=copy).name == first.name  # data files are not shipped
    with (copy / "naming.py").open("a") as f:
        f.write("\n# an edit\n")
    edited = build_wheel(tmp_path / "d", package_dir=copy)
    assert edited.name != first.name  # the local version label is a digest of the code


def test_not_a_package_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not the tensorllm package"):
        build_wheel(tmp_path / "out", package_dir=tmp_path)
