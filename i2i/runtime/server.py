"""The HTTP server: KServe v2 / Triton inference protocol (tritonclient works unchanged), a plain
image endpoint for people and curl, health with readiness after warm-up, Prometheus metrics,
and the Triton extensions tools call (extensions.py). With ServerConfig.grpc_port the same
service answers KServe v2 gRPC too (grpc_service.py), sharing the batcher and the engine.

    GET  /v2/health/live | /v2/health/ready | /v2 | /v2/models/{model}[/versions/1][/ready]
    POST /v2/models/{model}[/versions/1]/infer        JSON tensors or the binary extension
    GET  /v2/models/{model}[/versions/1]/config       Triton's model configuration (JSON)
    GET  /v2/models[/{model}[/versions/1]]/stats      Triton's statistics
    POST /v2/repository/index                         the repository index ({"ready": true})
    POST /v1/translate[?output=mask][&strength=0.5]   an image (raw body or multipart) -> PNG
                                                      (a knob in the query picks the model's
                                                      signature that takes it), with
                                                      Server-Timing and i2i-batch headers
         /v1/translate?mask=SCHEME[&seed=N]           ... with a mask drawn by a scheme
         /v1/translate?engine=NAME                    ... on one of several engines loaded
         /v1/translate  Accept: application/json      every output as a data URL, the mask, the
                                                      engine, its batches and timing (page.py)
    GET  /v1/models                                   the model by tensor kinds, the resolution
                                                      policies, mask schemes, engines loaded
    GET  /v1/samples/{i}.png[?domain=A|B]             a sample picture of the synthetic domain
    GET  /  |  /page/{file}                           the web page (open, as health is)
    GET  /metrics                                     Prometheus text format

Several engines (i2i-serve --engine onnxruntime,openvino) each get their own Service and
batcher; KServe v2, gRPC and /metrics serve the first, /v1/translate?engine=NAME any of them.

A request's input names pick the model's signature (i2i.models.spec): a model with two image
inputs (lomit) takes `image` and `exemplar` of one shape, or the multipart files of those names,
and with a `mask` too its `masked` signature. The runtime reads tensor kinds, never names: every
image input is a picture file, every mask input (1 = translate, 0 = keep) either a grey file of
the image's size (pixel / 255: grey levels give a soft mask) or a scheme of i2i.data.masks in the
query (?mask=center:0.5, ?mask=rects:...), drawn on the image with the seed `seed` (default 0),
so the same query gives the same mask; every knob input (the additive `strength`) a number in
the query. ?output=NAME returns an output, or a mask input as it was used.

Every error, an unknown path (404) and a wrong method (405) included, is {"error": "..."} with a
4xx status (5xx only for engine failures and overload).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import time
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..models.spec import InputError
from . import extensions, page
from .batcher import BatcherError
from .protocol import HEADER_LENGTH, ProtocolError, encode_infer, parse_infer
from .service import ServerConfig, Service
from .trace import Trace
from .translation import translate_upload
from .uploads import uploads

__all__ = ["ServerConfig", "Service", "create_app"]

def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _json_object(body: bytes, what: str) -> dict:
    """An optional JSON object body ({} when empty); ProtocolError otherwise."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ProtocolError(f"{what} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def create_app(engine, config: ServerConfig | None = None, more: Sequence = ()) -> Starlette:
    """The app serving `engine`, and on /v1/translate?engine=NAME the engines `more` too (the
    same model, each with its own Service and batcher)."""
    config = config or ServerConfig()
    service = Service(engine, config)
    name = service.spec.model
    services = {engine.name: service}
    for other in more:
        if other.name in services:
            raise ValueError(f"engine {other.name!r} is named twice; name each engine once")
        if other.spec.model != name:
            raise ValueError(f"engine {other.name!r} serves {other.spec.model!r}, engine "
                             f"{engine.name!r} {name!r}: the engines of one server must serve "
                             "one model")
        services[other.name] = Service(other, config)

    def chosen(request: Request) -> Service:
        wanted = request.query_params.get("engine", engine.name)
        if wanted not in services:
            raise ProtocolError(f"engine {wanted!r} is not loaded; this server runs "
                                f"{', '.join(services)} (start i2i-serve with --engine "
                                "NAME,NAME to load several)")
        return services[wanted]

    def check_model(request: Request) -> None:
        model = request.path_params["model"]
        version = request.path_params.get("version", "1")
        if model != name or version != "1":
            raise ProtocolError(f"unknown model {model!r} (version {version}); this server "
                                f"serves {name!r} version 1", status=404)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(service.server_metadata())

    async def model_metadata(request: Request) -> Response:
        check_model(request)
        return JSONResponse(service.metadata_json())

    async def model_ready(request: Request) -> Response:
        check_model(request)
        return JSONResponse({"name": name, "ready": service.ready},
                            status_code=200 if service.ready else 503)

    async def model_config(request: Request) -> Response:
        check_model(request)
        return JSONResponse(service.config_json())

    async def statistics(request: Request) -> Response:
        if "model" in request.path_params:
            check_model(request)
        return JSONResponse(service.statistics_json())

    async def repository_index(request: Request) -> Response:
        async with service.body(request) as body:
            options = _json_object(body, "the repository index request")
        ready_only = options.get("ready", False)
        if not isinstance(ready_only, bool):
            raise ProtocolError(f"'ready' must be true or false, got {ready_only!r}")
        return JSONResponse(extensions.repository_index(name, service.ready, ready_only))

    async def infer(request: Request) -> Response:
        started = time.perf_counter_ns()
        check_model(request)
        async with service.body(request) as body:
            parsed = await service.cpu(parse_infer, body, request.headers.get(HEADER_LENGTH),
                                       service.max_elements)
        outputs = await service.infer(parsed.inputs, parsed.timeout_ms, started)
        content, headers = await service.cpu(encode_infer, name, parsed, outputs)
        return Response(content, headers=headers)

    async def translate(request: Request) -> Response:
        trace, every = Trace(), page.wants_json(request.headers.get("accept", ""))
        async with service.body(request) as body:
            files = await uploads(request, body, service.spec.default.image.name)
        target = chosen(request)
        run = functools.partial(target.infer, report=trace.report)
        done = await translate_upload(target.spec, files, request.query_params, run,
                                      target.cpu, config.max_pixels, config.max_run_pixels,
                                      every)
        if every:
            return JSONResponse(page.json_answer(done, trace, target.spec, target.engine.name),
                                headers=trace.headers())
        notes = {"i2i-note": "; ".join(done.notes)} if done.notes else {}
        return Response(done.png, media_type="image/png", headers={**trace.headers(), **notes})

    async def models(request: Request) -> Response:
        return JSONResponse(page.model_info({k: s.spec for k, s in services.items()}))

    async def sample(request: Request) -> Response:
        number, dot, kind = request.path_params["name"].partition(".")
        if not number.isdigit() or (dot, kind) != (".", "png"):
            raise ProtocolError(f"samples are named N.png (0.png, 1.png, ...), got "
                                f"{request.path_params['name']!r}", status=404)
        png = await service.cpu(page.sample_png, service.spec, int(number),
                                request.query_params.get("domain", "A"))
        return Response(png, media_type="image/png")

    async def page_file(request: Request) -> Response:
        content, media = page.static_file(request.path_params.get("name", "index.html"))
        return Response(content, media_type=media, headers={"Cache-Control": "no-cache"})

    async def metrics(request: Request) -> Response:
        service.metrics.queue_depth.set(service.batcher.stats.queue_depth)
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/stats", statistics),
        Route("/v2/models/{model}", model_metadata),
        Route("/v2/models/{model}/versions/{version}", model_metadata),
        Route("/v2/models/{model}/ready", model_ready),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/config", model_config),
        Route("/v2/models/{model}/versions/{version}/config", model_config),
        Route("/v2/models/{model}/stats", statistics),
        Route("/v2/models/{model}/versions/{version}/stats", statistics),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v1/translate", translate, methods=["POST"]),
        Route("/v1/models", models), Route("/v1/samples/{name}", sample),
        Route("/", page_file), Route("/page/{name}", page_file),
        Route("/metrics", metrics),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for other in list(services.values())[1:]:   # ready once every engine is
            await other.start()
        await service.start()
        grpc = None
        if config.grpc_port is not None:        # the same service, batcher and engine
            from .grpc_service import start_grpc
            grpc = await start_grpc(service, config.grpc_host, config.grpc_port)
        yield
        if grpc is not None:
            await grpc.stop(grace=5)
        for each in services.values():
            await each.stop()

    async def handle(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status", 500)
        response = error(str(exc), status)
        if status == 503:                       # a full queue: come back shortly
            response.headers["Retry-After"] = "1"
        return response

    async def internal(request: Request, exc: Exception) -> Response:
        """A fault of the server itself, as JSON too (uvicorn logs the traceback)."""
        return error(f"internal server error ({type(exc).__name__}); the server log has the "
                     "details", 500)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        """404 (unknown path), 405 (wrong method), ... as JSON, as the protocol wants."""
        allowed = (exc.headers or {}).get("Allow")
        hint = f"; allowed: {allowed}" if allowed else ""
        what = {404: f"no such endpoint {request.url.path!r}",
                405: f"{request.method} is not allowed on {request.url.path!r}{hint}"}
        return error(what.get(exc.status_code, exc.detail), exc.status_code)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={InputError: handle, BatcherError: handle,
                                        HTTPException: http_error, Exception: internal},
                    middleware=[Middleware(Guard, service=service, api_key=config.api_key)])
    app.state.service, app.state.services = service, services

    return app


class Guard:
    """ASGI middleware: the optional bearer API key (health and the page's files stay open:
    they hold no secret), and the request counter by endpoint and status."""

    def __init__(self, app, service: Service, api_key: str | None):
        self.app, self.service = app, service
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        status = {"code": 500}

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.expected and not _open(path):
                given = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(given, self.expected):
                    response = error("missing or wrong API key (send 'Authorization: Bearer "
                                     "KEY')", 401)
                    return await response(scope, receive, send_and_record)
            await self.app(scope, receive, send_and_record)
        finally:
            self.service.metrics.requests.labels(_endpoint(path), str(status["code"])).inc()


def _open(path: str) -> bool:
    return path.startswith(("/v2/health", "/page/")) or path == "/"


def _endpoint(path: str) -> str:
    if path.endswith("/infer"):
        return "infer"
    if path.startswith("/v1/translate"):
        return "translate"
    if path.startswith("/v2/health"):
        return "health"
    if path == "/" or path.startswith("/page/"):
        return "page"
    return "metrics" if path == "/metrics" else "metadata"
