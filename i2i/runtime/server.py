"""The HTTP server: KServe v2 / Triton inference protocol (tritonclient works unchanged), a plain
image endpoint for people and curl, health with readiness after warm-up, Prometheus metrics.

    GET  /v2/health/live | /v2/health/ready | /v2 | /v2/models/{model}[/versions/1][/ready]
    POST /v2/models/{model}[/versions/1]/infer        JSON tensors or the binary extension
    POST /v1/translate[?output=mask][&strength=0.5]   an image (raw body or multipart) -> PNG
                                                      (a knob in the query picks the model's
                                                      signature that takes it)
         /v1/translate?mask=SCHEME[&seed=N]           ... with a mask drawn by a scheme
    GET  /metrics                                     Prometheus text format

A request's input names pick the model's signature (i2i.models.spec): a model with two image
inputs (lomit) takes `image` and `exemplar` of one shape, or the multipart files of those names,
and with a `mask` too its `masked` signature. The runtime reads tensor kinds, never names: every
image input is a picture file, every mask input (1 = translate, 0 = keep) either a grey file of
the image's size (pixel / 255: grey levels give a soft mask) or a scheme of i2i.data.masks in the
query (?mask=center:0.5, ?mask=rects:...), drawn on the image with the seed `seed` (default 0),
so the same query gives the same mask; every knob input (the additive `strength`) a number in
the query. ?output=NAME returns an output, or a mask input as it was used.

Errors are {"error": "..."} with a 4xx status (5xx only for engine failures and overload).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..engines import check_batch
from ..models.spec import InputError
from . import images, resolution
from .batcher import Batcher, BatcherError
from .kinds import knob_inputs, mask_input, warm_batch
from .metrics import Metrics
from .pictures import build_inputs, full_size_check
from .protocol import HEADER_LENGTH, NAMES, ProtocolError, encode_infer, parse_infer
from .resolution import NATIVE_BUDGET
from .uploads import decode_files, resolution_of, scheme_of, uploads

log = logging.getLogger("i2i.serve")


@dataclass
class ServerConfig:
    max_batch: int = 32
    max_delay_ms: float = 5.0
    max_queue: int = 256
    timeout_ms: float = 30_000.0
    api_key: str | None = None
    max_body_bytes: int = 64 << 20
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    max_run_pixels: int = NATIVE_BUDGET         # N x H x W one request may give the engine
    body_timeout_s: float = 60.0                # a body must arrive within this (408)
    max_inflight_bytes: int = 512 << 20         # request bodies held at once (503 beyond)
    cpu_workers: int = 2                        # threads that decode, resample and encode
    warmup: bool = True


class Service:
    """The engine, its batcher and the metrics: what the routes share."""

    def __init__(self, engine, config: ServerConfig):
        self.engine, self.config = engine, config
        self.max_batch = min(config.max_batch, engine.spec.max_batch_size)
        # The engine's spec, with this server's batch limit: what every request is checked by.
        self.spec = dataclasses.replace(engine.spec, max_batch_size=self.max_batch)
        self.metrics = Metrics()
        self.batcher = Batcher(engine.run, self.max_batch, config.max_delay_ms,
                               config.max_queue, config.timeout_ms,
                               on_batch=self.metrics.on_batch)
        self.ready = False
        self.inflight = 0                       # request body bytes held right now
        self.mask = mask_input(self.spec)       # filled by a mask file or ?mask=SCHEME
        # Decoding, resampling and encoding run here, never on the event loop.
        self.pool = ThreadPoolExecutor(config.cpu_workers, thread_name_prefix="i2i-cpu")
        # The most values one KServe request may carry: the run budget times the widest
        # signature's channels per pixel.
        per_pixel = max(sum(t.channels for t in s.inputs if t.spatial) or 1
                        for s in self.spec.signatures.values())
        self.max_elements = config.max_run_pixels * per_pixel

    @contextlib.asynccontextmanager
    async def body(self, request: Request):
        """The request's body: at most max_body_bytes (413), arriving within body_timeout_s
        (408), counted against the bytes all requests may hold at once (503) until the block
        ends."""
        limit, held = self.config.max_body_bytes, [0]
        declared = request.headers.get("content-length")

        async def read() -> bytes:
            chunks = []
            async for chunk in request.stream():
                held[0] += len(chunk)
                self.inflight += len(chunk)
                if held[0] > limit:
                    raise ProtocolError(f"request body is over the limit of {limit} bytes "
                                        "(raise it with --max-body-mb)", status=413)
                if self.inflight > self.config.max_inflight_bytes:
                    raise ProtocolError("the server holds as many request bodies as it may; "
                                        "retry shortly", status=503)
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await _drain(request, limit)
                raise ProtocolError(f"request body of {declared} bytes is over the limit of "
                                    f"{limit} (raise it with --max-body-mb)", status=413)
            try:
                body = await asyncio.wait_for(read(), self.config.body_timeout_s)
            except asyncio.TimeoutError as err:
                raise ProtocolError(f"the request body did not arrive within "
                                    f"{self.config.body_timeout_s:g} s (--body-timeout-s)",
                                    status=408) from err
            yield body
        finally:
            self.inflight -= held[0]

    async def cpu(self, fn, *args):
        """fn(*args) on the CPU pool: the event loop keeps answering meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def start(self) -> None:
        await self.batcher.start()
        if self.config.warmup:
            await asyncio.to_thread(self.warm_up)
        self.ready = True

    def warm_up(self) -> None:
        """Run every batch size of the default signature once (CUDA graphs and lazy compilation
        happen here), and batch size 1 of every other signature."""
        size = self.spec.size or self.spec.default_size
        started = time.perf_counter()
        for n in range(1, self.max_batch + 1):
            self.engine.run(warm_batch(self.spec.default, n, size))
        for signature in self.spec.signatures.values():
            if signature is not self.spec.default:
                self.engine.run(warm_batch(signature, 1, size))
        log.info("warmed up batch sizes 1..%d in %.1f s", self.max_batch,
                 time.perf_counter() - started)

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop(drain=True)
        self.pool.shutdown(wait=False)

    async def infer(self, inputs: dict[str, torch.Tensor], timeout_ms: float | None = None
                    ) -> dict[str, torch.Tensor]:
        """inputs: one signature's, (N, ...) of one N (and one H and W): checked here, once,
        before the request is queued."""
        await self.cpu(check_batch, self.spec, inputs)
        first = next(t for t in inputs.values())
        pixels = first.shape[0] * (first.shape[2] * first.shape[3] if first.dim() == 4 else 1)
        if pixels > self.config.max_run_pixels:
            raise ProtocolError(f"the request gives the engine {pixels} pixels (N x H x W); "
                                f"this server runs at most {self.config.max_run_pixels} at once "
                                "(raise it with --max-run-pixels, or send /v1/translate, "
                                "which tiles large pictures)", status=413)
        self.metrics.queue_depth.set(self.batcher.stats.queue_depth + 1)
        try:
            return await self.batcher.submit(inputs, timeout_ms)
        except (ValueError, TypeError) as err:         # the batcher's own checks: the client's
            raise ProtocolError(str(err)) from err
        finally:
            self.metrics.queue_depth.set(self.batcher.stats.queue_depth)


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _drain(request: Request, limit: int) -> None:
    """Read the rest of a refused body and drop it (up to a bound), so the client gets the
    answer instead of a connection reset while it is still sending."""
    dropped = 0
    async for chunk in request.stream():
        dropped += len(chunk)
        if dropped > 4 * limit:
            break


def create_app(engine, config: ServerConfig | None = None) -> Starlette:
    config = config or ServerConfig()
    service = Service(engine, config)
    name = service.spec.model

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
        return JSONResponse({"name": "i2i", "version": __version__,
                             "extensions": ["binary_tensor_data"]})

    async def model_metadata(request: Request) -> Response:
        check_model(request)
        def tensors(specs):
            return [{"name": t.name, "datatype": NAMES[t.dtype], "shape": list(t.shape)}
                    for t in specs]
        meta = {"name": name, "versions": ["1"], "platform": f"i2i_{engine.name}",
                # beyond KServe v2: what runs the model, and why it was chosen (engine auto)
                "engine": {"name": engine.name, "precision": service.spec.precision,
                           "device": service.spec.device, "choice": service.spec.choice},
                "inputs": tensors(service.spec.inputs),
                "outputs": tensors(service.spec.outputs),
                # beyond KServe v2: every signature a request may pick by its input names
                "signatures": {label: {"inputs": tensors(s.inputs),
                                       "outputs": tensors(s.outputs)}
                               for label, s in service.spec.signatures.items()}}
        return JSONResponse(meta)

    async def model_ready(request: Request) -> Response:
        check_model(request)
        return JSONResponse({"name": name, "ready": service.ready},
                            status_code=200 if service.ready else 503)

    async def infer(request: Request) -> Response:
        check_model(request)
        async with service.body(request) as body:
            parsed = await service.cpu(parse_infer, body, request.headers.get(HEADER_LENGTH),
                                       service.max_elements)
        outputs = await service.infer(parsed.inputs, parsed.timeout_ms)
        content, headers = await service.cpu(encode_infer, name, parsed, outputs)
        return Response(content, headers=headers)

    async def translate(request: Request) -> Response:
        query, spec = request.query_params, service.spec
        async with service.body(request) as body:
            files = await uploads(request, body, spec.default.image.name)
        knobs = knob_inputs(query, spec)
        scheme = scheme_of(query, name, service.mask, files)
        policy = resolution_of(query, config.max_run_pixels)
        given, masks = await service.cpu(decode_files, files, spec, config.max_pixels, scheme)
        decoded = {k: p.image for k, p in given.items()}
        inputs = await service.cpu(build_inputs, spec, decoded, masks, scheme, knobs)
        signature = await service.cpu(full_size_check, spec, inputs)
        # ?output=NAME: an output, or a mask input as it was used
        described = {t.name: t for t in signature.outputs}
        described.update({t.name: t for t in signature.of_kind("mask")
                          if t.name not in described})
        want = query.get("output", "translation")
        if want not in described:
            raise ProtocolError(f"output={want!r} is not an output of {name}; choose from "
                                f"{list(described)}")
        outputs = await resolution.translate(service.infer, spec, signature, inputs, policy,
                                             service.cpu)
        over = given[described[want].over or signature.image.name]
        shown = outputs[want] if want in outputs else inputs[want]
        notes = [p.note for p in given.values() if p.note]
        png = await service.cpu(images.output_png, shown[0], described[want], over.image.size,
                                over.alpha)
        return Response(png, media_type="image/png",
                        headers={"i2i-note": "; ".join(notes)} if notes else None)

    async def metrics(request: Request) -> Response:
        service.metrics.queue_depth.set(service.batcher.stats.queue_depth)
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/{model}", model_metadata),
        Route("/v2/models/{model}/versions/{version}", model_metadata),
        Route("/v2/models/{model}/ready", model_ready),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v1/translate", translate, methods=["POST"]),
        Route("/metrics", metrics),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        yield
        await service.stop()

    async def handle(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status", 500)
        response = error(str(exc), status)
        if status == 503:                       # a full queue: come back shortly
            response.headers["Retry-After"] = "1"
        return response

    async def http_error(request: Request, exc: HTTPException) -> Response:
        """404 (unknown path), 405 (wrong method), ... as JSON, as the protocol wants."""
        allowed = (exc.headers or {}).get("Allow")
        hint = f"; allowed: {allowed}" if allowed else ""
        what = {404: f"no such endpoint {request.url.path!r}",
                405: f"{request.method} is not allowed on {request.url.path!r}{hint}"}
        return error(what.get(exc.status_code, exc.detail), exc.status_code)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={InputError: handle, BatcherError: handle,
                                        HTTPException: http_error},
                    middleware=[Middleware(Guard, service=service, api_key=config.api_key)])
    app.state.service = service

    return app


class Guard:
    """ASGI middleware: the optional bearer API key (health stays open), and the request
    counter by endpoint and status."""

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
            if self.expected and not path.startswith("/v2/health"):
                given = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(given, self.expected):
                    response = error("missing or wrong API key (send 'Authorization: Bearer "
                                     "KEY')", 401)
                    return await response(scope, receive, send_and_record)
            await self.app(scope, receive, send_and_record)
        finally:
            self.service.metrics.requests.labels(_endpoint(path), str(status["code"])).inc()


def _endpoint(path: str) -> str:
    if path.endswith("/infer"):
        return "infer"
    if path.startswith("/v1/translate"):
        return "translate"
    if path.startswith("/v2/health"):
        return "health"
    return "metrics" if path == "/metrics" else "metadata"
