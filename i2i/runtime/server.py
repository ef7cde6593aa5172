"""The HTTP server: KServe v2 / Triton inference protocol (tritonclient works unchanged), a plain
image endpoint for people and curl, health with readiness after warm-up, Prometheus metrics.

    GET  /v2/health/live | /v2/health/ready | /v2 | /v2/models/{model}[/versions/1][/ready]
    POST /v2/models/{model}[/versions/1]/infer        JSON tensors or the binary extension
    POST /v1/translate[?output=mask][&strength=0.5]   an image (raw body or multipart) -> PNG
    GET  /metrics                                     Prometheus text format

Errors are {"error": "..."} with a 4xx status (5xx only for engine failures and overload).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass

import torch
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from . import images
from .batcher import Batcher, BatcherError
from .metrics import Metrics
from .protocol import HEADER_LENGTH, NAMES, ProtocolError, encode_infer, parse_infer

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
    warmup: bool = True


class Service:
    """The engine, its batcher and the metrics: what the routes share."""

    def __init__(self, engine, config: ServerConfig):
        self.engine, self.config = engine, config
        self.spec = engine.spec
        self.metrics = Metrics()
        self.max_batch = min(config.max_batch, self.spec.max_batch_size)
        self.batcher = Batcher(engine.run, self.max_batch, config.max_delay_ms,
                               config.max_queue, config.timeout_ms,
                               on_batch=self.metrics.on_batch)
        self.ready = False
        self.expected = {t.name: tuple(t.shape) for t in self.spec.inputs}

    async def start(self) -> None:
        await self.batcher.start()
        if self.config.warmup:
            await asyncio.to_thread(self.warm_up)
        self.ready = True

    def warm_up(self) -> None:
        """Run every batch size once (CUDA graphs and lazy compilation happen here)."""
        h, w = self.spec.size or self.spec.default_size
        started = time.perf_counter()
        for n in range(1, self.max_batch + 1):
            self.engine.run({t.name: torch.zeros(n, self.spec.inputs[0].shape[1], h, w)
                             for t in self.spec.inputs})
        log.info("warmed up batch sizes 1..%d in %.1f s", self.max_batch,
                 time.perf_counter() - started)

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop(drain=True)

    def check_size(self, height: int, width: int) -> None:
        fixed, m = self.spec.size, self.spec.size_multiple
        if fixed and (height, width) != tuple(fixed):
            raise ProtocolError(f"this engine takes {fixed[0]}x{fixed[1]} images, got "
                                f"{height}x{width}")
        if height % m or width % m or height < m or width < m:
            raise ProtocolError(f"image size {height}x{width}: height and width must be "
                                f"multiples of {m}")

    async def infer(self, inputs: dict[str, torch.Tensor], timeout_ms: float | None = None
                    ) -> dict[str, torch.Tensor]:
        first = next(iter(inputs.values()))
        if first.shape[0] > self.max_batch:
            raise ProtocolError(f"batch of {first.shape[0]} is larger than this server's "
                                f"max batch {self.max_batch}; split it")
        self.check_size(first.shape[2], first.shape[3])
        self.metrics.queue_depth.set(self.batcher.stats.queue_depth + 1)
        try:
            return await self.batcher.submit(inputs, timeout_ms)
        finally:
            self.metrics.queue_depth.set(self.batcher.stats.queue_depth)


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        # Read the rest and drop it (up to a bound), so the client gets the 413 instead of a
        # connection reset while it is still sending.
        dropped = 0
        async for chunk in request.stream():
            dropped += len(chunk)
            if dropped > 4 * limit:
                break
        raise ProtocolError(f"request body of {declared} bytes is over the limit of {limit}",
                            status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request body is over the limit of {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


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
        return JSONResponse({"name": name, "versions": ["1"],
                             "platform": f"i2i_{engine.name}",
                             "inputs": tensors(service.spec.inputs),
                             "outputs": tensors(service.spec.outputs)})

    async def model_ready(request: Request) -> Response:
        check_model(request)
        return JSONResponse({"name": name, "ready": service.ready},
                            status_code=200 if service.ready else 503)

    async def infer(request: Request) -> Response:
        check_model(request)
        body = await read_body(request, config.max_body_bytes)
        parsed = parse_infer(body, request.headers.get(HEADER_LENGTH), service.expected)
        outputs = await service.infer(parsed.inputs, parsed.timeout_ms)
        content, headers = encode_infer(name, parsed, outputs)
        return Response(content, headers=headers)

    async def translate(request: Request) -> Response:
        body = await read_body(request, config.max_body_bytes)
        files = await _uploads(request, body)
        if "image" not in files:
            raise ProtocolError("send an image: the raw request body, or a multipart field "
                                "named 'image'")
        picture = images.decode(files["image"], config.max_pixels)
        size = service.spec.size or service.spec.default_size
        x = images.to_tensor(picture, size)[None]                    # (1, 3, H, W)
        for t in service.spec.inputs[1:]:
            if t.name not in files:
                raise ProtocolError(f"this model also needs a {t.name!r} image")
        inputs = {service.spec.inputs[0].name: x}
        for t in service.spec.inputs[1:]:
            inputs[t.name] = images.to_tensor(images.decode(files[t.name], config.max_pixels,
                                                            t.name), size)[None]
        outputs = await service.infer(inputs)
        want = request.query_params.get("output", "translation")
        if want not in outputs:
            raise ProtocolError(f"output={want!r} is not an output of {name}; choose from "
                                f"{list(outputs)}")
        strength = request.query_params.get("strength")
        if strength is not None:
            outputs = _with_strength(outputs, x, strength, name)
        t = outputs[want][0]
        png = images.mask_png(t, picture.size) if want == "mask" else \
            images.to_png(t, picture.size)
        return Response(png, media_type="image/png")

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
        return error(str(exc), getattr(exc, "status", 500))

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ProtocolError: handle, BatcherError: handle},
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


async def _uploads(request: Request, body: bytes) -> dict[str, bytes]:
    """{field: bytes} from a multipart form, or {"image": body} for a raw upload."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        return {"image": body}
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartParser

    async def replay():
        yield body
    form = await MultiPartParser(request.headers, replay()).parse()
    files = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files[key] = await value.read()
    if "image" not in files and len(files) == 1:
        files["image"] = next(iter(files.values()))
    return files


def _with_strength(outputs: dict[str, torch.Tensor], x: torch.Tensor, text: str,
                   model: str) -> dict[str, torch.Tensor]:
    """The additive model's translation at another mask strength: clamp(x + s * m)."""
    if "mask" not in outputs or model != "additive":
        raise ProtocolError("strength applies to the additive model only")
    try:
        strength = float(text)
    except ValueError as err:
        raise ProtocolError(f"strength must be a number, got {text!r}") from err
    if not 0.0 <= strength <= 4.0:
        raise ProtocolError(f"strength {strength} is outside [0, 4]")
    translation = torch.clamp(x + strength * outputs["mask"], -1.0, 1.0)
    return {**outputs, "translation": translation}

