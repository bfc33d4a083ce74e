"""Look at a registry in MLflow's own UI, in a real browser: the model-versions table must stay readable.

Starts ``mlflow ui`` on a copy of an MLflow sqlite store (a sweep's ``runs/mlflow/mlflow.db``), opens it in a
headless Chromium through Playwright and checks what a user sees:

* the registered model's versions table: every version row is shorter than ``--max-row-px`` (a version carries a
  handful of tags; its metrics are its run's, see docs/registry.md);
* the champion's logged model page lists its registered version (no "Not registered" badge);
* screenshots of the versions table, the champion's version page and its logged model page.

It prints a table and writes ``ui_check.json`` and the screenshots to ``--out``; exit status 1 when a check fails.
Not part of the test suite (it needs a browser and a sweep's store). Setup, once::

    apt-get install chromium                     # Playwright's own browser download is not needed
    pip install playwright                       # the Python package only (no `playwright install`)

Usage (a small sweep first, then the check)::

    tensorllm sweep --layers 28,29 --ranks 64,32,4 --ranks 32,16,4 --datasets qa_wikidata --val-limit 40 \\
        --test-limit 40 --no-generate
    python -m bench.ui_check --store runs/mlflow/mlflow.db --out runs/ui_check
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from flows.runtime.services import free_port, wait_healthy


def start_ui(store: Path, port: int, log: Path) -> subprocess.Popen:
    """``mlflow ui`` on ``store`` (a sqlite file), listening on 127.0.0.1:``port``; returns once /health answers."""
    handle = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{store}",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", 240, proc)
    except (RuntimeError, TimeoutError) as exc:
        stop(proc)
        raise RuntimeError(f"mlflow ui on port {port} did not start ({exc}); see {log}") from None
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Stop the UI server and the workers it started (its own process group only)."""
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def registry_facts(store: Path, name: str | None) -> dict:
    """From the store itself: the registered model, its versions' tag counts, the champion's logged model."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    models = client.search_registered_models()
    if not models:
        raise SystemExit(f"{store}: no registered model")
    model = client.get_registered_model(name or models[0].name)
    versions = client.search_model_versions(f"name='{model.name}'")
    champion = (model.aliases or {}).get("champion") or max(int(v.version) for v in versions)
    mv = client.get_model_version(model.name, str(champion))
    model_id = mv.model_id or mv.source.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    return {"name": model.name, "versions": len(versions), "model_tags": len(model.tags),
            "tags_per_version": {int(v.version): len(v.tags) for v in versions}, "champion": int(champion),
            "model_id": model_id, "experiment_id": logged.experiment_id}


def row_heights(page) -> list[float]:
    """Heights (CSS px) of the rows of the versions table: the rows that link to a version page."""
    return page.evaluate("""() => {
        const links = [...document.querySelectorAll('a[href*="/versions/"]')];
        const rows = new Set(links.map(a => a.closest('tr, [role="row"]')).filter(Boolean));
        return [...rows].map(r => r.getBoundingClientRect().height);
    }""")


def check(args) -> dict:
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tensorllm-ui-") as tmp:
        store = Path(tmp) / "mlflow.db"
        shutil.copyfile(args.store, store)  # the UI may migrate or write: never the user's file
        facts = registry_facts(store, args.model)
        port = free_port()
        server = start_ui(store, port, out / "mlflow_ui.log")
        base = f"http://127.0.0.1:{port}/#"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                page.goto(f"{base}/models/{facts['name']}")
                page.wait_for_selector('a[href*="/versions/"]', timeout=60_000)
                page.wait_for_timeout(1500)  # tags and aliases render after the rows
                heights = row_heights(page)
                page.locator('a[href*="/versions/"]').first.scroll_into_view_if_needed()  # the app scrolls inside
                page.screenshot(path=str(out / "model_versions.png"))
                page.goto(f"{base}/models/{facts['name']}/versions/{facts['champion']}")
                page.wait_for_timeout(3000)
                page.screenshot(path=str(out / "champion_version.png"), full_page=True)
                page.goto(f"{base}/experiments/{facts['experiment_id']}/models/{facts['model_id']}")
                page.wait_for_selector(f"text={facts['model_id']}", timeout=60_000)
                page.wait_for_timeout(3000)
                logged_text = page.inner_text("body")
                page.screenshot(path=str(out / "logged_model.png"), full_page=True)
                browser.close()
        finally:
            stop(server)
    tags = list(facts["tags_per_version"].values())
    result = {**facts, "store": str(args.store), "viewport": [args.width, args.height], "rows": len(heights),
              "row_px_max": max(heights, default=0.0), "row_px_median": statistics.median(heights) if heights else 0.0,
              "tags_per_version_max": max(tags), "tags_per_version_median": statistics.median(tags),
              "logged_model_not_registered": "Not registered" in logged_text,
              "logged_model_lists_version": facts["name"] in logged_text}
    result["checks"] = {
        "versions table found": result["rows"] == facts["versions"] or result["rows"] > 0,
        f"every version row < {args.max_row_px} px": 0 < result["row_px_max"] < args.max_row_px,
        "logged model page lists its version": result["logged_model_lists_version"]
                                               and not result["logged_model_not_registered"],
    }
    (out / "ui_check.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("runs/mlflow/mlflow.db"), help="an MLflow sqlite file")
    parser.add_argument("--model", help="registered model (default: the first one)")
    parser.add_argument("--out", type=Path, default=Path("runs/ui_check"), help="screenshots and ui_check.json")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="a system Chromium (apt-get install chromium)")
    parser.add_argument("--max-row-px", type=float, default=200.0, help="the tallest version row allowed")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    if not args.store.is_file():
        parser.error(f"--store {args.store}: no such file (a sweep writes runs/mlflow/mlflow.db)")
    if not args.chromium:
        parser.error("no chromium on PATH: apt-get install chromium, or pass --chromium PATH")
    result = check(args)
    print(f"store {result['store']}: {result['name']}, {result['versions']} versions, champion v{result['champion']}")
    print(f"tags per version: max {result['tags_per_version_max']}, median {result['tags_per_version_median']}; "
          f"registered model tags: {result['model_tags']}")
    print(f"version rows ({result['rows']}) at {args.width}x{args.height}: max {result['row_px_max']:.0f} px, "
          f"median {result['row_px_median']:.0f} px")
    for name, ok in result["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"screenshots and ui_check.json in {args.out}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
