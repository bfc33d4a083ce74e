"""The ``tensorllm models`` and ``tensorllm export`` sub-commands: the MLflow registry (list, show, load,
relocate) and model folders written from artifacts, a registered version or another export.

Attached to the command by :func:`tensorllm.cli.build_parser`; mlflow is imported only when a registry command
runs, so ``tensorllm --help`` stays fast.
"""

from __future__ import annotations

import json
import time

from .cli import emit_json


def add_models_command(sub) -> None:
    p = sub.add_parser("models", help="query the MLflow registry: list, show, load")
    p.add_argument("--mlflow-tracking-uri", help="default $MLFLOW_TRACKING_URI or sqlite under runs/mlflow")
    models = p.add_subparsers(dest="models_command", required=True)
    q = models.add_parser("list", help="registered models with their versions and aliases")
    q.add_argument("--json", action="store_true")
    q = models.add_parser("show", help="metrics, params and lineage of NAME, NAME@ALIAS or NAME/VERSION")
    q.add_argument("spec")
    q.add_argument("--json", action="store_true")
    q = models.add_parser("load", help="materialise NAME@ALIAS or NAME/VERSION as a Hugging Face folder")
    q.add_argument("spec")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--json", action="store_true")
    q = models.add_parser("relocate", help="after moving a runs/ folder: rewrite the sqlite store's absolute "
                                           "artifact locations from OLD_ROOT to NEW_ROOT")
    q.add_argument("old_root", help="where the runs/ folder was (the absolute path MLflow recorded)")
    q.add_argument("new_root", help="where it is now")
    q.add_argument("--db", default="runs/mlflow/mlflow.db", help="the moved sqlite database (default runs/mlflow/mlflow.db)")
    q.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)


def add_export_command(sub) -> None:
    p = sub.add_parser("export", help="write a variant as a model folder: factorised (smaller) or dense")
    p.add_argument("spec", nargs="+", metavar="SPEC",
                   help="artifact folders, one export folder (re-exported from the base and artifacts it records), "
                        "or one registry spec NAME, NAME@ALIAS or NAME/VERSION")
    p.add_argument("--out", required=True, help="output folder (written beside it and renamed into place at the end)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it is not empty (the old folder "
                                                            "stays until the new one is complete)")
    p.add_argument("--format", default="factorised", metavar="{factorised,dense}",
                   help="factorised: the factors of compressed layers are stored (load with tensorllm.load_compressed "
                        "or from_pretrained(..., trust_remote_code=True)); dense: a plain Hugging Face folder, for "
                        "engines such as vLLM (default factorised); both in the base model's dtype")
    p.add_argument("--base-model", help="with artifact folders: the base model (default: the one the first "
                                        "artifact records)")
    p.add_argument("--tracking-uri", "--mlflow-tracking-uri", dest="tracking_uri",
                   help="with a registry spec: default $MLFLOW_TRACKING_URI or sqlite under runs/mlflow")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)


# ---- models (the MLflow registry) -------------------------------------------------------------------
def cmd_models(args) -> int:
    from tensorllm.mlflow_store import relocate_sqlite_store

    if args.models_command == "relocate":  # before opening the store: nothing may use it while it is rewritten
        changed = relocate_sqlite_store(args.db, args.old_root, args.new_root)
        print(f"Rewrote artifact locations under {args.old_root} -> {args.new_root}: "
              + ", ".join(f"{table} {n}" for table, n in changed.items()))
        if args.json:
            emit_json({"changed": changed})
        return 0
    from tensorllm.mlflow_store import existing_store
    from tensorllm.registry import Registry

    registry = Registry(existing_store(args.mlflow_tracking_uri))  # read-only: a missing store is an error
    if args.models_command == "load":
        from .cli import check_writable_folder

        check_writable_folder(args.out, "--out")
    if args.models_command == "list":
        rows = registry.list_models()
        for row in rows:
            aliases = ", ".join(f"{a}=v{v}" for a, v in row.get("aliases", {}).items()) or "-"
            print(f"{row['name']:40s} versions {row['versions']:>3d}  latest v{row['latest_version']}  aliases {aliases}")
        if not rows:
            print("No registered models (run `tensorllm sweep` first).")
        if args.json:
            emit_json({"models": rows})
    elif args.models_command == "show":
        info = registry.show(args.spec)
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
        if args.json:
            emit_json(info)
    else:  # load
        out = registry.load(args.spec, args.out)
        print(f"Wrote a Hugging Face folder: {out}\n  AutoModelForCausalLM.from_pretrained({str(out)!r})")
        if args.json:
            emit_json({"spec": args.spec, "out": str(out)})
    return 0


# ---- export --------------------------------------------------------------------------------------
def export_sources(specs: list[str], base_model: str | None, tracking_uri: str | None, tmp: str) -> tuple[str, list, dict]:
    """``(base model, artifact folders, where they came from)`` for ``tensorllm export``'s SPECs.

    Either every SPEC is an artifact folder (the base model is ``base_model`` or the one recorded in the
    first artifact), or there is one registry spec (``NAME``, ``NAME@ALIAS``, ``NAME/VERSION``) whose
    version's ``variant/`` folder is downloaded into ``tmp`` (the registry records the base model).
    """
    from pathlib import Path

    from .artifact import read_meta

    from .export import export_lineage

    paths = [Path(s) for s in specs]
    lineage = export_lineage(paths[0]) if len(paths) == 1 and paths[0].is_dir() else None
    if lineage is not None:  # an export folder (factorised or dense): its base model and artifacts again
        return base_model or lineage[0], lineage[1], {"export": str(paths[0]), "artifacts": [str(p) for p in lineage[1]]}
    if all(p.exists() for p in paths):
        metas = [read_meta(p) for p in paths]  # a clear error when a folder is not an artifact
        base = base_model or metas[0].get("base_model", {}).get("name")
        if not base:
            raise ValueError(f"{paths[0]}: artifact.json records no base_model.name; pass --base-model MODEL")
        return base, paths, {"artifacts": [str(p) for p in paths]}
    missing = next(s for s, p in zip(specs, paths) if not p.exists())
    forms = "give artifact folders, or one registry spec NAME, NAME@ALIAS or NAME/VERSION"
    if len(specs) > 1:
        raise FileNotFoundError(f"artifact folder {missing!r} does not exist ({forms})")
    from .registry import VARIANT_DIR, Registry, parse_spec  # imports mlflow: only on the registry path

    try:
        parse_spec(missing)
    except ValueError:
        raise FileNotFoundError(f"artifact folder {missing!r} does not exist ({forms})") from None
    if base_model:
        raise ValueError("--base-model goes with artifact folders; a registered variant records its own base model")
    from .mlflow_store import existing_store

    registry = Registry(existing_store(tracking_uri))
    try:
        info = registry.show(missing)
    except ValueError as exc:
        raise ValueError(f"{missing!r} is not an artifact folder, and as a registry spec: {exc}") from None
    local = Path(registry.client.download_artifacts(info["run_id"], VARIANT_DIR, tmp))
    folders = [local / entry["dir"] for entry in info["artifacts"]]
    source = {"spec": missing, "resolved": info["resolved"], "version": info["version"], "run_id": info["run_id"],
              "tracking_uri": registry.tracking_uri,
              "artifacts": [entry.get("source_path", entry["dir"]) for entry in info["artifacts"]]}
    return info["base_model"], folders, source


def cmd_export(args) -> int:
    import tempfile

    from .artifact import read_meta
    from .atomic_folder import refuse_existing
    from .export import FORMS, export_variant, folder_bytes
    from .models import resolve_model

    if args.format not in FORMS:  # checked before any download or model load
        raise ValueError(f"unknown format {args.format!r}; allowed: {', '.join(FORMS)}")
    from .cli import check_writable_folder

    check_writable_folder(args.out, "--out")  # a file, or a folder under one: one line before the model loads
    refuse_existing(args.out, args.overwrite)  # before any download or model load
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tensorllm-export-") as tmp:
        base, paths, source = export_sources(args.spec, args.base_model, args.tracking_uri, tmp)
        base_bytes = folder_bytes(resolve_model(base))
        info = export_variant(base, paths, args.out, format=args.format, overwrite=args.overwrite)
        layers = info["layers"] or [  # the dense format writes every artifact back; say so per layer
            {"layer": m["layer"], "kind": m["kind"], "form": "dense", "reason": "dense requested"}
            for m in (read_meta(p) for p in paths)]
    n = len(paths)
    print(f"Exported {base} + {n} artifact{'s' if n != 1 else ''} ({args.format}) -> {info['path']}")
    print(f"  bytes on disk  {info['bytes']:,}  (base model {base_bytes:,}: {info['bytes'] / base_bytes:.1%})")
    for row in layers:
        print(f"  layer {row['layer']:<4d} {row['kind']:<11s} {row['form']:<11s} {row['reason']}")
    how = ("tensorllm.load_compressed({!r}), or AutoModelForCausalLM.from_pretrained({!r}, trust_remote_code=True)"
           if args.format == "factorised" else "AutoModelForCausalLM.from_pretrained({!r}) (a plain Hugging Face folder)")
    print(f"  {info['dtype']}; load with " + how.format(info["path"], info["path"]))
    if args.json:
        emit_json({"path": info["path"], "format": info["format"], "bytes": info["bytes"], "base_model": str(base),
                   "base_bytes": base_bytes, "bytes_ratio": info["bytes"] / base_bytes, "layers": layers,
                   "source": source, "wall_seconds": time.perf_counter() - start})
    return 0
