"""The HTTP server: KServe v2 / Triton inference protocol (tritonclient works unchanged), a plain
image endpoint for people and curl, health with readiness after warm-up, Prometheus metrics.

    GET  /v2/health/live | /v2/health/ready | /v2 | /v2/models/{model}[/versions/1][/ready]
    POST /v2/models/{model}[/versions/1]/infer        JSON tensors or the binary extension
    POST /v1/translate[?output=mask][&strength=0.5]   an image (raw body or multipart) -> PNG
         /v1/translate?mask=SCHEME[&seed=N]           ... with a mask drawn by a scheme
    GET  /metrics                                     Prometheus text format

A model with an exemplar (lomit) takes the tensors `image` and `exemplar` of one shape, or the
multipart files `image` and `exemplar`; where the engine allows, also a `mask` (N, 1, H, W) in
[0, 1] (a grey PNG on /v1/translate) that replaces the computed input mask.

A model with a mask input (maskcyclegan: required, 1 = translate, 0 = keep; lomit: optional)
takes on /v1/translate either a grey file `mask` of the image's size (pixel / 255: grey levels
give a soft mask) or a scheme of i2i.data.masks in the query (?mask=center:0.5, ?mask=rects:...),
drawn on the image with the seed `seed` (default 0), so the same query gives the same mask.
?output=mask returns the mask that was used.

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
from PIL import Image
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..data.masks import MaskSampler, parse_mask_spec
from ..models.spec import TensorSpec
from . import images
from .batcher import Batcher, BatcherError
from .engines import EngineSpec, mask_input
from .metrics import Metrics
from .protocol import HEADER_LENGTH, NAMES, ProtocolError, encode_infer, parse_infer

log = logging.getLogger("i2i.serve")
# Outputs drawn over another input's pixels than the image's: returned at that input's size.
DRAWN_OVER = {"exemplar_mask": "exemplar"}


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
        self.optional = {t.name: t for t in self.spec.optional_inputs}
        self.refused = dict(self.spec.refused_inputs)       # input name -> why not here
        self.expected = {t.name: tuple(t.shape) for t in (*self.spec.inputs,
                                                          *self.spec.optional_inputs)}
        # Masks are range-checked (they weight a blend); images are not.
        self.bounded = {t.name: tuple(t.range) for t in (*self.spec.inputs, *self.optional.values())
                        if _is_mask(t)}
        self.mask = mask_input(self.spec)       # filled by a mask file or ?mask=SCHEME
        # A required mask (maskcyclegan) that selects nothing has no meaningful answer: the
        # generator's instance norms amplify rounding noise, and backends disagree on it.
        self.nonempty = {t.name for t in self.spec.inputs if _is_mask(t)}

    async def start(self) -> None:
        await self.batcher.start()
        if self.config.warmup:
            await asyncio.to_thread(self.warm_up)
        self.ready = True

    def warm_up(self) -> None:
        """Run every batch size once (CUDA graphs and lazy compilation happen here), and batch
        size 1 with the optional inputs too."""
        h, w = self.spec.size or self.spec.default_size
        started = time.perf_counter()
        for n in range(1, self.max_batch + 1):
            self.engine.run({t.name: torch.zeros(n, t.shape[1], h, w) for t in self.spec.inputs})
        if self.optional:
            self.engine.run({t.name: torch.zeros(1, t.shape[1], h, w)
                             for t in (*self.spec.inputs, *self.spec.optional_inputs)})
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
        """inputs: every model input, and optional ones, (N, C, H, W) of one N, H and W."""
        first = next(iter(inputs.values()))
        if first.shape[0] > self.max_batch:
            raise ProtocolError(f"batch of {first.shape[0]} is larger than this server's "
                                f"max batch {self.max_batch}; split it")
        self.check_size(first.shape[2], first.shape[3])
        for name in inputs.keys() & self.bounded.keys():
            _check_range(name, inputs[name], self.bounded[name])
        for name in inputs.keys() & self.nonempty:
            _check_nonempty(name, inputs[name])
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
        meta = {"name": name, "versions": ["1"], "platform": f"i2i_{engine.name}",
                "inputs": tensors(service.spec.inputs),
                "outputs": tensors(service.spec.outputs)}
        if service.optional:            # beyond KServe v2: inputs a request may add
            meta["optional_inputs"] = tensors(service.spec.optional_inputs)
        return JSONResponse(meta)

    async def model_ready(request: Request) -> Response:
        check_model(request)
        return JSONResponse({"name": name, "ready": service.ready},
                            status_code=200 if service.ready else 503)

    async def infer(request: Request) -> Response:
        check_model(request)
        body = await read_body(request, config.max_body_bytes)
        parsed = parse_infer(body, request.headers.get(HEADER_LENGTH), service.expected,
                             optional=service.optional, refused=service.refused)
        outputs = await service.infer(parsed.inputs, parsed.timeout_ms)
        content, headers = encode_infer(name, parsed, outputs)
        return Response(content, headers=headers)

    async def translate(request: Request) -> Response:
        body = await read_body(request, config.max_body_bytes)
        files = await _uploads(request, body)
        described = {t.name: t for t in service.spec.outputs}
        if service.mask is not None and service.mask.name not in described:
            described[service.mask.name] = service.mask     # ?output=mask: the mask used
        want = request.query_params.get("output", "translation")
        if want not in described:
            raise ProtocolError(f"output={want!r} is not an output of {name}; choose from "
                                f"{list(described)}")
        strength = request.query_params.get("strength")
        strength = None if strength is None else _strength(strength, name)
        scheme = _scheme(request.query_params, name, service.mask, files, service.refused)
        refused = sorted(files.keys() & service.refused.keys())
        if refused:
            raise ProtocolError(service.refused[refused[0]])
        pictures, inputs = _pictures(files, service.spec, config.max_pixels, scheme)
        outputs = await service.infer(inputs)
        if strength is not None:        # the additive model: clamp(x + s * m)
            outputs = {**outputs, "translation": torch.clamp(
                inputs["image"] + strength * outputs["mask"], -1.0, 1.0)}
        size = pictures[DRAWN_OVER.get(want, "image")].size
        shown = outputs[want] if want in outputs else inputs[want]
        return Response(images.output_png(shown[0], described[want], size),
                        media_type="image/png")

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
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay():
        yield body
    try:
        form = await MultiPartParser(request.headers, replay()).parse()
    except MultiPartException as err:
        raise ProtocolError(f"the multipart form could not be read ({err})") from err
    files = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files[key] = await value.read()
    if "image" not in files and len(files) == 1:
        files["image"] = next(iter(files.values()))
    return files


@dataclass(frozen=True)
class _Scheme:
    """A mask named in the query (?mask=SPEC[&seed=N]), for the input `name`."""

    name: str
    text: str
    sampler: MaskSampler
    seed: int


def _scheme(query, model: str, mask: TensorSpec | None, files: dict[str, bytes],
            refused: dict[str, str]) -> _Scheme | None:
    """The query's mask scheme, or None when it names none; ProtocolError for a bad one."""
    text, seed = query.get("mask"), query.get("seed")
    if text is None:
        if seed is not None:
            raise ProtocolError("seed goes with a mask scheme, e.g. ?mask=rects&seed=3")
        return None
    if mask is None:
        raise ProtocolError(refused.get("mask") or f"{model} takes no mask; leave out ?mask=")
    if mask.name in files:
        raise ProtocolError(f"give the {mask.name} one way: either the multipart file "
                            f"{mask.name!r} or ?mask=SCHEME in the query, not both")
    if text.partition(":")[0].strip() == "attention":
        raise ProtocolError("?mask=attention:PATH would read a file on the server; threshold "
                            f"the attention map yourself and upload it as the file {mask.name!r}")
    try:
        sampler = parse_mask_spec(text)
    except ValueError as err:
        raise ProtocolError(str(err)) from err
    if seed is not None and not (seed.isdigit() and int(seed) < 2**63):
        raise ProtocolError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
    return _Scheme(mask.name, text, sampler, int(seed or 0))


def _pictures(files: dict[str, bytes], spec: EngineSpec, max_pixels: int,
              scheme: _Scheme | None = None
              ) -> tuple[dict[str, Image.Image], dict[str, torch.Tensor]]:
    """The uploaded pictures by input name, and the inputs (1, C, H, W) made from them.

    Pictures are resized to the model's size, so an exemplar may have another size than the
    image; a mask (grey, pixel / 255) marks the image's pixels, so it must have the image's size.
    A scheme's mask is drawn on the image's pixels and scaled to the model's size.
    """
    if "image" not in files:
        raise ProtocolError("send an image: the raw request body, or a multipart field "
                            "named 'image'")
    names = [t.name for t in spec.inputs]
    unsent = [t for t in spec.inputs if t.name not in files and not (scheme and
                                                                       t.name == scheme.name)]
    missing = [t.name for t in unsent if not _is_mask(t)]
    if missing:
        raise ProtocolError(f"{spec.model} takes the images {names}; missing {missing}: send "
                            "a multipart form with one file field per name")
    if unsent:                          # a required mask
        mask = unsent[0].name
        raise ProtocolError(f"{spec.model} needs a {mask} (1 = translate, 0 = keep): upload a "
                            f"grey image of the image's size as the multipart file {mask!r}, "
                            "or name a scheme in the query, e.g. ?mask=center:0.5 or "
                            "?mask=rects&seed=0")
    size = spec.size or spec.default_size
    sent = [t for t in (*spec.inputs, *spec.optional_inputs) if t.name in files]
    pictures = {t.name: images.decode(files[t.name], max_pixels, t.name)
                for t in sent if not _is_mask(t)}
    inputs = {n: images.to_tensor(p, size)[None] for n, p in pictures.items()}
    width, height = pictures["image"].size
    for t in filter(_is_mask, sent):
        mask = images.decode(files[t.name], max_pixels, t.name, mode="L")
        if mask.size != (width, height):
            raise ProtocolError(f"{t.name} is {mask.size[0]}x{mask.size[1]} pixels; it must "
                                f"have the image's size, {width}x{height} (width x height)")
        inputs[t.name] = images.to_mask(mask, size)[None]
    if scheme is not None:
        inputs[scheme.name] = images.drawn_mask(scheme.sampler, (width, height), size,
                                                scheme.seed, f"{scheme.name}={scheme.text}")
    return pictures, inputs


def _is_mask(t: TensorSpec) -> bool:
    return t.shape[1] == 1 and tuple(t.range) == (0.0, 1.0)


def _strength(text: str, model: str) -> float:
    """The additive model's mask strength s of ?strength= (translation = clamp(x + s * m))."""
    if model != "additive":
        raise ProtocolError(f"strength applies to the additive model only, not {model!r}")
    try:
        strength = float(text)
    except ValueError as err:
        raise ProtocolError(f"strength must be a number, got {text!r}") from err
    if not 0.0 <= strength <= 4.0:
        raise ProtocolError(f"strength {strength} is outside [0, 4]")
    return strength


def _check_range(name: str, x: torch.Tensor, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    if not bool(((x >= lo) & (x <= hi)).all()):         # NaN fails both comparisons
        raise ProtocolError(f"input {name!r} must lie in [{lo:g}, {hi:g}]; it holds values "
                            f"from {x.min().item():g} to {x.max().item():g}")


def _check_nonempty(name: str, x: torch.Tensor) -> None:
    empty = (x.flatten(1).amax(dim=1) <= 0).nonzero().flatten().tolist()
    if empty:
        raise ProtocolError(f"input {name!r} selects no pixel in row(s) {empty}: an empty mask "
                            "has no defined translation (the output would be numerical noise); "
                            "mark at least one pixel, or keep the image as it is")
