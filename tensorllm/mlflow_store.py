"""Housekeeping of a local MLflow store: where it lives, opening it safely from many processes, moving it.

No mlflow import here: these act on the sqlite file itself (MLflow's own client is :mod:`tensorllm.registry`).

* :func:`default_tracking_uri`: ``$MLFLOW_TRACKING_URI``, else ``./runs/mlflow/mlflow.db``;
* :func:`existing_store`: the same URI for a read-only command, checked without creating anything;
* :func:`store_creation_lock`: serialises the first access of a sqlite store across processes;
* :func:`promotion_lock`: serialises "read the champion, decide, move the alias" of one registered model;
* :func:`registration_lock`: serialises "look the variant up by key, register it" of one registered model;
* :func:`relocate_sqlite_store`: rewrites the absolute artifact locations after a ``runs/`` folder moved.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit

READ_FORMS = "sqlite:////ABSOLUTE/PATH.db, http(s)://HOST:PORT, file:///FOLDER (or a plain folder path)"


def default_tracking_uri(root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a sqlite store at ``<root or cwd>/runs/mlflow/mlflow.db`` (absolute)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    folder = (Path(root) if root is not None else Path.cwd()).expanduser().resolve() / "runs" / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def existing_store(tracking_uri: str | None, root: Path | None = None) -> str:
    """The tracking URI a read-only command (``models list|show|load``, ``export NAME@ALIAS``) uses: the given one,
    else ``$MLFLOW_TRACKING_URI``, else the default sqlite store; checked, and nothing created.

    A sqlite store or a file store that does not exist is a :class:`FileNotFoundError` saying so (MLflow would
    create an empty one and report "no models"); an unknown scheme is a :class:`ValueError` naming the forms.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{(Path(root) if root is not None else Path.cwd()).expanduser().resolve() / 'runs' / 'mlflow' / 'mlflow.db'}"
    scheme = urlsplit(uri).scheme.lower()
    create_hint = "nothing was created; run `tensorllm sweep` first, or pass --mlflow-tracking-uri (or set MLFLOW_TRACKING_URI)"
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise ValueError(f"tracking URI {uri!r}: a sqlite URI starts with sqlite:///; allowed: {READ_FORMS}")
        db = _sqlite_path(uri)
        if db is not None and not db.is_file():
            raise FileNotFoundError(f"no MLflow store at {db} (tracking URI {uri}); {create_hint}")
        problem = sqlite_file_problem(db) if db is not None else None
        if problem:  # MLflow would write its tables into the user's file
            raise ValueError(f"tracking URI {uri!r}: {problem}; nothing was written; allowed: {READ_FORMS}")
    elif scheme == "file" or (scheme == "" and uri):
        folder = Path(urlsplit(uri).path if scheme == "file" else uri).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"no MLflow file store at {folder} (tracking URI {uri}); {create_hint}")
    elif scheme not in ("http", "https"):
        raise ValueError(f"tracking URI {uri!r}: unknown scheme {scheme!r}; allowed: {READ_FORMS}")
    return uri


SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_file_problem(db: Path) -> str | None:
    """Why ``db`` cannot be a sqlite store, or None (it does not exist yet, is empty, or is a SQLite database).

    sqlite opens any file, and MLflow then writes its tables into it: a mistyped ``--mlflow-tracking-uri`` naming
    a text file turned that file into a new store (measured: 1 byte -> 954 KB, "No registered models")."""
    if db.is_dir():
        return f"{db} is a folder, not a sqlite database file"
    if not db.is_file():
        return None
    with open(db, "rb") as handle:
        head = handle.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        return f"{db} is not a sqlite database (its first bytes are not the SQLite header)"
    return None


@contextlib.contextmanager
def store_creation_lock(tracking_uri: str):
    """Hold an exclusive lock on ``<db>.lock`` while a sqlite store is first opened, across processes.

    MLflow creates (or migrates) the tables of a sqlite store on first access, and two processes doing
    that at once fail inside alembic ("table _alembic_tmp_experiments already exists", "Online migration
    expected to match one row", measured 9 failures of 12 with 4 processes on a new store). Serialising
    the first access is enough: afterwards sqlite's own locking (and MLflow's busy timeout) applies.
    Other URIs (a server) need nothing.
    """
    path = _sqlite_path(tracking_uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def promotion_lock(tracking_uri: str | None, registered_model: str):
    """Hold an exclusive lock per (store, registered model) while a sweep reads the champion and moves it.

    Two sweeps of one model that finish together would otherwise both compare with the same old champion
    and the later write would win, even with the worse variant. Under the lock the later sweep sees the
    earlier one's champion and decides against it. The lock is a file: next to a sqlite store, else in the
    system's temporary folder (which serialises sweeps on one machine; sweeps on different machines
    sharing one tracking server are not serialised).
    """
    with _model_lock(tracking_uri, registered_model, "promotion"):
        yield


@contextlib.contextmanager
def registration_lock(tracking_uri: str | None, registered_model: str):
    """Hold an exclusive lock per (store, registered model) while a variant is looked up by key and registered.

    Two identical sweeps at once otherwise both find no version of a key, both log a run, and the later one
    deletes its duplicate version but leaves its run behind (an extra FINISHED run). A file lock like
    :func:`promotion_lock`'s (a different file).
    """
    with _model_lock(tracking_uri, registered_model, "registration"):
        yield


@contextlib.contextmanager
def _model_lock(tracking_uri: str | None, registered_model: str, purpose: str):
    import fcntl
    import hashlib
    import tempfile

    uri = tracking_uri or default_tracking_uri()
    db = _sqlite_path(uri)
    folder = db.parent if db is not None else Path(tempfile.gettempdir()) / "tensorllm-locks"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{uri}\n{registered_model}".encode()).hexdigest()[:16]
    with open(folder / f"{purpose}-{digest}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory databases)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = tracking_uri[len("sqlite:///"):].split("?")[0]
    return None if not db or db == ":memory:" else Path(db)


#: (table, column) of MLflow's sqlite schema that hold absolute artifact locations
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("model_versions", "storage_location"), ("logged_models", "artifact_location"))


def relocate_sqlite_store(db_path: str | Path, old_root: str | Path, new_root: str | Path) -> dict[str, int]:
    """Rewrite the absolute artifact locations of a moved sqlite store: every location under ``old_root``
    is moved under ``new_root``. Returns the number of rows changed per table.

    MLflow stores absolute paths (experiment artifact roots, run artifact URIs, model-version storage and
    logged-model locations), so a ``runs/`` folder copied elsewhere still points at the old place. Run it
    once after the move, with no MLflow process using the store; it is one transaction.
    """
    import sqlite3

    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"{db_path} is not an MLflow sqlite database")
    old, new = str(Path(old_root)).rstrip("/"), str(Path(new_root).resolve()).rstrip("/")
    changed: dict[str, int] = {}
    with sqlite3.connect(db_path) as db:  # commits on success, rolls back on error
        try:
            db.execute("SELECT artifact_location FROM experiments LIMIT 1")
        except sqlite3.DatabaseError as exc:  # not sqlite at all, or sqlite without MLflow's tables
            raise ValueError(f"{db_path} is not an MLflow sqlite database ({exc}); allowed: the mlflow.db of a "
                             "moved runs/mlflow folder") from None
        for table, column in _LOCATION_COLUMNS:
            for prefix in (old, f"file://{old}"):
                replacement = new if prefix == old else f"file://{new}"
                cursor = db.execute(  # exact prefix match (LIKE would treat '_' in paths as a wildcard)
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (replacement, len(prefix) + 1, prefix, len(prefix) + 1, prefix + "/"))
                changed[table] = changed.get(table, 0) + cursor.rowcount
    return changed
