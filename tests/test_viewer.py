"""The viewer in a real browser (Debian's headless chromium through playwright): the static
export and the live server, their clicks and searches, hostile strings from the corpus, the
database and prompts shown as text, and requests for things that do not exist or lie outside
what the viewer was given."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import uvicorn
from playwright import sync_api as playwright_api

from cli_runner import run_in_process as run_cli
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.loading import load_run, save_checkpoint
from sparsecircuits.viewer.server import build_app
from sparsecircuits.viewer.site import Site

HOSTILE = ["<script>window.__pwned = 1</script>", '"><img src=x onerror="window.__pwned=1">']
TASK = "single_double_quote"


@pytest.fixture(scope="module")
def viewed(tmp_path_factory: pytest.TempPathFactory, quote_run: Path) -> dict:
    """The quote model again, reading a corpus full of markup, with an EAP circuit and an
    explanations database holding a hostile explanation."""
    root = tmp_path_factory.mktemp("viewer")
    corpus = root / "corpus"
    corpus.mkdir()
    # Every line holds both hostile strings, so whichever excerpts a unit ranks highest (that
    # depends on the trained weights and the machine's float rounding), both are in them.
    lines = [f"html = '{HOSTILE[0]}' + '{HOSTILE[1]}'  # line {i}\n" for i in range(400)]
    (corpus / "pages.py").write_text("".join(lines))
    loaded = load_run(quote_run)
    run = root / "hostile-run"
    config = {**loaded.config, "train": {**loaded.config["train"], "data": str(corpus)}}
    save_checkpoint(run, loaded.model, loaded.tokenizer, config, loaded.state)
    circuit = root / "quote.json"
    prune = ["prune", str(run), "--task", TASK, "--target-loss", "0.3", "--method", "eap"]
    assert run_cli(*prune, "--out", str(circuit)).returncode == 0
    db = root / "explanations.sqlite"
    explain = ["explain", str(run), "--layer", "1", "--units", "0-5", "--tokens", "6000"]
    assert run_cli(*explain, "--db", str(db), "--quiet").returncode == 0
    store = ExplanationStore(db)
    sha = Site([run]).runs[0].sha256
    record = store.start_run(str(run), sha, "hand", "none", {})
    unit = {"model_sha256": sha, "unit": "0.mlp.3", "layer": 0, "kind": "mlp", "unit_index": 3}
    store.add(record, {**unit, "explainer": "hand", "explanation": HOSTILE[1] + " findme"})
    store.connection.close()
    return {"run": run, "circuit": circuit, "db": db, "root": root}


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "the viewer tests need chromium (apt-get install chromium)"
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def open_page(browser, url: str):  # noqa: ANN001, ANN201
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    return page, errors


def assert_not_run(page) -> None:  # noqa: ANN001
    """No hostile string became markup: no script ran, no <img onerror> exists."""
    assert page.evaluate("window.__pwned") is None
    assert page.query_selector_all("img[onerror]") == []


def test_static_export_opens_from_disk_and_shows_everything_as_text(viewed: dict, browser) -> None:  # noqa: ANN001
    out = viewed["root"] / "export"
    arguments = [str(viewed["run"]), "--circuits", str(viewed["circuit"]), "--db"]
    result = run_cli("view", *arguments, str(viewed["db"]), "--export", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("index", "model-0", "circuits-0", "circuit-0", "units-0", "unit-0-0.mlp.3"):
        page, errors = open_page(browser, (out / f"{name}.html").as_uri())
        assert errors == [] and page.title().endswith("sparsecircuits"), name
        assert_not_run(page)
        page.close()
    assert not list(out.glob("prompt*")), "the prompt page needs the live server"
    # The hostile explanation and the corpus's markup are on the unit page, as text.
    page, _ = open_page(browser, (out / "unit-0-0.mlp.3.html").as_uri())
    assert HOSTILE[1] + " findme" in page.inner_text("main")
    assert "<script>window.__pwned" in page.inner_text("main")
    assert_not_run(page)


def test_clicking_a_circuit_node_shows_its_activations_and_excerpts(viewed: dict, browser) -> None:  # noqa: ANN001
    out = viewed["root"] / "export-click"
    arguments = [str(viewed["run"]), "--circuits", str(viewed["circuit"]), "--export", str(out)]
    assert run_cli("view", *arguments).returncode == 0
    page, errors = open_page(browser, (out / "circuit-0.html").as_uri())
    nodes = page.query_selector_all("#drawing g.node")
    record = json.loads(viewed["circuit"].read_text())
    assert len(nodes) == len(record["nodes"]) > 0
    nodes[0].click()
    panel = page.inner_text("#node-panel")
    assert record["nodes"][0]["id"] in panel
    assert "Activation at the last token of task prompts" in panel
    assert "task loss change when ablated alone" in panel
    assert page.query_selector_all("#node-panel .excerpt")
    assert errors == []
    assert_not_run(page)


def test_unit_search_finds_a_unit_by_its_explanation(viewed: dict, browser) -> None:  # noqa: ANN001
    out = viewed["root"] / "export-search"
    arguments = [str(viewed["run"]), "--db", str(viewed["db"]), "--export", str(out)]
    assert run_cli("view", *arguments).returncode == 0
    page, errors = open_page(browser, (out / "units-0.html").as_uri())
    assert len(page.query_selector_all("#unit-table tbody tr")) == 7
    page.fill("#unit-search", "findme")
    rows = page.query_selector_all("#unit-table tbody tr")
    assert len(rows) == 1 and "0.mlp.3" in rows[0].inner_text()
    assert errors == []
    assert_not_run(page)


@pytest.fixture(scope="module")
def server(viewed: dict):
    site = Site([viewed["run"]], [viewed["circuit"]], viewed["db"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(site, n_tokens=4000)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    for _ in range(100):
        if instance.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_live_pages_load_and_unknown_ids_are_404_pages(server: str) -> None:
    for path in ("/", "/model/0", "/circuits/0", "/circuit/0", "/units/0", "/unit/0/1.mlp.2"):
        status, text = fetch(server + path)
        assert status == 200, (path, text[-300:])
    for path in ("/model/7", "/circuit/3", "/unit/0/9.mlp.1", "/unit/0/nonsense", "/nowhere"):
        status, text = fetch(server + path)
        assert status == 404 and "Traceback" not in text and "Not found" in text, path


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/unit/0/..%2f..%2fetc%2fpasswd",
        "/model/0/../../etc/passwd",
        "/circuit/%2e%2e%2fconfig.json",
    ],
)
def test_no_path_outside_the_given_runs_can_be_read(server: str, path: str) -> None:
    status, text = fetch(server + path)
    assert status == 404 and "root:" not in text and "Traceback" not in text


def test_the_prompt_page_runs_the_model_and_shows_the_prompt_as_text(server: str, browser) -> None:  # noqa: ANN001
    page, errors = open_page(browser, server + "/prompt/0")
    prompt = "x = '" + HOSTILE[0] + HOSTILE[1]
    page.fill("#prompt-text", prompt)
    page.click("button[type=submit]")
    page.wait_for_selector("#next-tokens tr")
    assert len(page.query_selector_all("#next-tokens tr")) == 10
    # The attention table's header spells the prompt back, token by token, as text.
    header = page.eval_on_selector_all(
        "table.attention tr:first-child th", "cells => cells.map(cell => cell.textContent)"
    )
    assert "".join(header) == prompt
    assert errors == []
    assert_not_run(page)
    request = urllib.request.Request(
        server + "/api/prompt/0", data=b'{"prompt": ""}', method="POST"
    )
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("an empty prompt was accepted")
    except urllib.error.HTTPError as error:
        assert error.code == 400 and "type a prompt" in error.read().decode()


def test_view_serves_on_localhost_by_default_and_refuses_bad_input(tmp_path: Path) -> None:
    from sparsecircuits.viewer.commands import view

    host = next(option for option in view.params if option.name == "host")
    assert host.default == "127.0.0.1"
    result = run_cli("view", str(tmp_path / "missing"), "--export", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_an_export_never_writes_into_a_folder_of_other_files(viewed: dict, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("mine")
    result = run_cli("view", str(viewed["run"]), "--export", str(tmp_path))
    assert result.returncode == 2 and "other files" in result.stderr
    assert (tmp_path / "index.html").read_text() == "mine"


def test_the_models_page_plots_the_frontier_of_several_models(viewed: dict) -> None:
    import torch

    from sparsecircuits.viewer.links import Links
    from sparsecircuits.viewer.pages import index_page

    loaded = load_run(viewed["run"])
    with torch.no_grad():  # another model (other weights) that still does the task
        for param in loaded.model.parameters():
            param.mul_(1.05)
    other = viewed["root"] / "other-run"
    save_checkpoint(other, loaded.model, loaded.tokenizer, loaded.config, loaded.state)
    circuit = viewed["root"] / "other.json"
    prune = ["prune", str(other), "--task", TASK, "--target-loss", "0.3", "--method", "eap"]
    assert run_cli(*prune, "--out", str(circuit)).returncode == 0
    site = Site([viewed["run"], other], [viewed["circuit"], circuit])
    assert [c.run_id for c in site.circuits] == [0, 1]
    page = index_page(site, Links())
    assert 'alt="frontier"' in page and "data:image/png;base64," in page
    assert 'alt="frontier"' not in index_page(Site([other], [circuit]), Links())
