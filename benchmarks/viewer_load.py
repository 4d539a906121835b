"""Viewer page load times on the shipped models, live and static, measured in headless
chromium (playwright): time to the page's load event, the first visit with nothing computed yet
(the server's background warm-up is off here, to measure it) and a second visit (served from
what the first computed). With --screenshots DIR, also a
screenshot of every page, as in the README.

    .venv/bin/python benchmarks/viewer_load.py --circuits runs/demo/circuit.json \\
        --db runs/demo/explanations.sqlite --screenshots docs/viewer
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from sparsecircuits.viewer.export import export_site
from sparsecircuits.viewer.server import build_app
from sparsecircuits.viewer.site import Site

PAGES = ["index", "model-0", "circuits-0", "circuit-0", "units-0", "unit"]


def live_path(name: str, unit: str) -> str:
    if name == "index":
        return "/"
    if name == "unit":
        return f"/unit/0/{unit}"
    kind, number = name.rsplit("-", 1)
    return f"/{'model' if kind == 'model' else kind}/{number}"


def load_seconds(page, url: str) -> float:  # noqa: ANN001
    started = time.perf_counter()
    page.goto(url, wait_until="load", timeout=600_000)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs", type=Path, nargs="*", default=[Path("models/reference-sparse-topk")]
    )
    parser.add_argument("--circuits", type=Path, action="append", default=[])
    parser.add_argument("--db", type=Path)
    parser.add_argument("--unit", default="1.mlp.0", help="the unit page measured")
    parser.add_argument("--tokens", type=int, default=30_000)
    parser.add_argument("--screenshots", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    site = Site(args.runs, args.circuits, args.db)
    print(
        f"loading {len(site.runs)} models, {len(site.circuits)} circuits: "
        f"{time.perf_counter() - started:.1f} s"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(site, args.tokens), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-gpu"],
        )
        page = browser.new_page(viewport={"width": 1300, "height": 860})
        rows = []
        for name in PAGES:
            url = base + live_path(name, args.unit)
            first, second = load_seconds(page, url), load_seconds(page, url)
            rows.append([name, first, second])
        started = time.perf_counter()
        export_site(site, Path(folder) / "export", args.tokens)
        export_seconds = time.perf_counter() - started
        for row in rows:
            name = row[0] if row[0] != "unit" else f"unit-0-{args.unit}"
            row.append(load_seconds(page, (Path(folder) / "export" / f"{name}.html").as_uri()))
        print(f"{'page':<12}{'live, first (s)':>18}{'live, again (s)':>18}{'static (s)':>12}")
        for name, first, second, static in rows:
            print(f"{name:<12}{first:>18.3f}{second:>18.3f}{static:>12.3f}")
        print(f"static export of every page: {export_seconds:.1f} s")
        if args.screenshots:
            take_screenshots(page, base, args)
        browser.close()
    server.should_exit = True
    started = time.perf_counter()  # the live server as `view` runs it: warming in the background
    build_app(Site(args.runs, args.circuits, args.db), args.tokens).state.warmed.wait()
    print(
        f"background warm-up of every model and circuit page: {time.perf_counter() - started:.1f} s"
    )


def take_screenshots(page, base: str, args: argparse.Namespace) -> None:  # noqa: ANN001
    out = args.screenshots
    out.mkdir(parents=True, exist_ok=True)
    for name in PAGES:
        page.goto(base + live_path(name, args.unit))
        if name == "circuit-0":
            nodes = page.query_selector_all("#drawing g.node")
            nodes[min(3, len(nodes) - 1)].click()
        page.screenshot(path=str(out / f"{name.split('-')[0]}.png"))
    page.goto(base + "/prompt/0")
    page.fill("#prompt-text", "def greet(name):\n    return 'hello, ' + name")
    page.click("button[type=submit]")
    page.wait_for_selector("#next-tokens tr")
    page.screenshot(path=str(out / "prompt.png"), full_page=True)
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
