"""The live viewer: Starlette routes over `pages`, served by uvicorn on 127.0.0.1 by default.

Routes take only integer ids and unit names, never paths, so no request can reach a file the
viewer was not given (static assets are served from the package by Starlette's StaticFiles,
which refuses paths outside its folder). Unknown pages and ids get a 404 page; any other error
a 500 page without a traceback. Pages that take a while to compute (circuit details, excerpts)
are computed once and kept.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sparsecircuits.errors import UserError
from sparsecircuits.viewer import pages
from sparsecircuits.viewer.links import Links
from sparsecircuits.viewer.prompt import analyse_prompt
from sparsecircuits.viewer.site import NotFound, Site

LINKS = Links(static=False)
STATIC = Path(__file__).parent / "static"
EXAMPLE_PROMPT = "def greet(name):\n    return 'hello, ' + name"


def build_app(site: Site, n_tokens: int = 30_000, warm: bool = True) -> Starlette:
    """The app; with `warm`, the slow pages (task suite, circuit details) are computed in the
    background from the start, so they are ready by the time someone opens them."""
    kept: dict[tuple, str] = {}
    locks: dict[tuple, threading.Lock] = {}
    locks_lock = threading.Lock()

    def once(key: tuple, make) -> str:  # noqa: ANN001
        with locks_lock:
            lock = locks.setdefault(key, threading.Lock())
        with lock:  # one computation per page; other pages go on meanwhile
            if key not in kept:
                kept[key] = make()
            return kept[key]

    def warm_up() -> None:
        try:
            for viewed in site.runs:
                once(("model", viewed.id), partial(pages.model_page, site, LINKS, viewed.id))
            for circuit in site.circuits:
                make = partial(pages.circuit_page, site, LINKS, circuit.id, n_tokens)
                once(("circuit", circuit.id), make)
        except Exception:  # noqa: BLE001 (the page's own request will show the error)
            pass
        finally:
            app.state.warmed.set()

    def html(make) -> HTMLResponse:  # noqa: ANN001
        try:
            return HTMLResponse(make())
        except NotFound as error:
            return HTMLResponse(pages.not_found_page(LINKS, str(error)), status_code=404)

    def index(request: Request) -> Response:
        return html(lambda: once(("index",), lambda: pages.index_page(site, LINKS)))

    def model(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return html(lambda: once(("model", run_id), lambda: pages.model_page(site, LINKS, run_id)))

    def atlas(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return html(lambda: once(("atlas", run_id), lambda: pages.atlas_page(site, LINKS, run_id)))

    def circuit(request: Request) -> Response:
        circuit_id = request.path_params["circuit_id"]
        return html(
            lambda: once(
                ("circuit", circuit_id),
                lambda: pages.circuit_page(site, LINKS, circuit_id, n_tokens),
            )
        )

    def units(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return html(lambda: pages.units_page(site, LINKS, run_id, n_tokens))

    def unit(request: Request) -> Response:
        run_id, name = request.path_params["run_id"], request.path_params["name"]
        return html(
            lambda: once(
                ("unit", run_id, name),
                lambda: pages.unit_page(site, LINKS, run_id, name, n_tokens),
            )
        )

    def prompt(request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def make() -> str:
            viewed = site.run(run_id)
            return pages.page(
                LINKS,
                "prompt.html",
                f"{viewed.name}: try a prompt",
                pages.model_nav(LINKS, site, run_id),
                api=f"/api/prompt/{run_id}",
                example=EXAMPLE_PROMPT,
            )

        return html(make)

    async def prompt_api(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": 'send JSON: {"prompt": TEXT}'}, status_code=400)
        try:
            viewed = site.run(run_id)
            text = body.get("prompt") if isinstance(body, dict) else None
            from starlette.concurrency import run_in_threadpool

            result = await run_in_threadpool(analyse_prompt, viewed, text)
        except NotFound as error:
            return JSONResponse({"error": str(error)}, status_code=404)
        except UserError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse(result)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return HTMLResponse(pages.not_found_page(LINKS, message), status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        return HTMLResponse(
            pages.not_found_page(LINKS, "the viewer failed on this page (see its log)"),
            status_code=500,
        )

    routes = [
        Route("/", index),
        Route("/model/{run_id:int}", model),
        Route("/circuits/{run_id:int}", atlas),
        Route("/circuit/{circuit_id:int}", circuit),
        Route("/units/{run_id:int}", units),
        Route("/unit/{run_id:int}/{name:str}", unit),
        Route("/prompt/{run_id:int}", prompt),
        Route("/api/prompt/{run_id:int}", prompt_api, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: not_found, 500: server_error},
    )
    app.state.warmed = threading.Event()
    if warm:
        threading.Thread(target=warm_up, daemon=True, name="viewer-warm-up").start()
    return app


def serve(site: Site, host: str, port: int, n_tokens: int) -> None:
    import uvicorn

    uvicorn.run(build_app(site, n_tokens), host=host, port=port, log_level="warning")
