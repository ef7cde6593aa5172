"""The KServe v2 gRPC service (Triton's GRPCInferenceService) beside the HTTP server, on the same
event loop, Service, batcher and engine (i2i-serve --grpc-port). The messages and the service
definition are the ones tritonclient[grpc] ships, so `tritonclient.grpc` and perf_analyzer work
unchanged.

    ServerLive ServerReady ServerMetadata ModelReady ModelMetadata   health and metadata
    ModelInfer                                                       tensors in and out (raw)
    ModelConfig ModelStatistics RepositoryIndex                      Triton's extensions

The other rpcs (shared memory, load/unload, streaming, trace) answer UNIMPLEMENTED. Errors carry
the status an HTTP client would get, mapped to gRPC codes (CODES); /metrics counts every rpc.
The API key, when set, is the metadata `authorization: Bearer KEY` (tritonclient's headers=);
health rpcs stay open.
"""

from __future__ import annotations

import functools
import hmac
import math
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import torch
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as config_pb
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

from ..models.spec import InputError
from . import extensions
from .batcher import BatcherError
from .protocol import DATATYPES, ProtocolError
from .service import Service

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
         404: grpc.StatusCode.NOT_FOUND, 408: grpc.StatusCode.DEADLINE_EXCEEDED,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
         500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE,
         504: grpc.StatusCode.DEADLINE_EXCEEDED}


def _answered(open_to_all: bool = False):
    """An rpc that checks the API key (unless open_to_all), turns the errors the server knows
    into a status code and message, and counts itself in i2i_requests (endpoint grpc:<rpc>,
    status the code's name)."""
    def wrap(method):
        endpoint = f"grpc:{method.__name__}"

        @functools.wraps(method)
        async def answer(self: Servicer, request, context: grpc.aio.ServicerContext):
            code = grpc.StatusCode.UNKNOWN              # an error the server does not know
            try:
                if not open_to_all:
                    self.authorise(context)
                response = await method(self, request, context)
                code = grpc.StatusCode.OK
                return response
            except (InputError, BatcherError) as err:
                code = CODES.get(getattr(err, "status", 500), grpc.StatusCode.INTERNAL)
                await context.abort(code, str(err))
            finally:
                self.service.metrics.requests.labels(endpoint, code.name).inc()
        return answer
    return wrap


class Servicer(rpc.GRPCInferenceServiceServicer):
    def __init__(self, service: Service):
        self.service, self.name = service, service.spec.model
        key = service.config.api_key
        self.expected = f"Bearer {key}".encode() if key else None

    def authorise(self, context: grpc.aio.ServicerContext) -> None:
        if self.expected is None:
            return
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not hmac.compare_digest(str(given).encode(), self.expected):
            raise ProtocolError("missing or wrong API key (send the metadata "
                                "'authorization: Bearer KEY')", status=401)

    def check_model(self, model: str, version: str) -> None:
        if model != self.name or version not in ("", "1"):
            raise ProtocolError(f"unknown model {model!r} (version {version or 1}); this "
                                f"server serves {self.name!r} version 1", status=404)

    @_answered(open_to_all=True)
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_answered(open_to_all=True)
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.service.ready)

    @_answered(open_to_all=True)
    async def ModelReady(self, request, context):
        known = request.name == self.name and request.version in ("", "1")
        return pb.ModelReadyResponse(ready=known and self.service.ready)

    @_answered()
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self.service.server_metadata())

    @_answered()
    async def ModelMetadata(self, request, context):
        self.check_model(request.name, request.version)
        # The protobuf message holds KServe v2's fields only: signatures and engine stay HTTP's.
        meta = {k: v for k, v in self.service.metadata_json().items()
                if k not in ("signatures", "engine")}
        return json_format.ParseDict(meta, pb.ModelMetadataResponse())

    @_answered()
    async def ModelConfig(self, request, context):
        self.check_model(request.name, request.version)
        config = json_format.ParseDict(self.service.config_json(), config_pb.ModelConfig())
        return pb.ModelConfigResponse(config=config)

    @_answered()
    async def ModelStatistics(self, request, context):
        if request.name:                # no name: every model's (this one's)
            self.check_model(request.name, request.version)
        return json_format.ParseDict(self.service.statistics_json(),
                                     pb.ModelStatisticsResponse())

    @_answered()
    async def RepositoryIndex(self, request, context):
        index = extensions.repository_index(self.name, self.service.ready, request.ready)
        return json_format.ParseDict({"models": index}, pb.RepositoryIndexResponse())

    @_answered()
    async def ModelInfer(self, request, context):
        started = time.perf_counter_ns()
        self.check_model(request.model_name, request.model_version)
        service = self.service
        inputs, timeout_ms = await service.cpu(parse_request, request, service.max_elements)
        outputs = await service.infer(inputs, timeout_ms, started)
        return await service.cpu(encode_response, self.name, request, outputs)


def parse_request(request: pb.ModelInferRequest, max_elements: int | None = None
                  ) -> tuple[dict[str, torch.Tensor], float | None]:
    """(float32 tensors by input name, timeout in ms or None) of a ModelInferRequest: raw
    contents (what tritonclient sends) or typed fp32_contents; ProtocolError for the rest."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"the request has {len(request.inputs)} inputs but "
                            f"{len(raw)} raw_input_contents; give one per input")
    declared = [_declared(item) for item in request.inputs]
    total = sum(math.prod(shape) for shape, _ in declared)
    if max_elements is not None and total > max_elements:
        raise ProtocolError(f"the inputs hold {total} values; this server takes at most "
                            f"{max_elements} per request (raise it with --max-pixels)",
                            status=413)
    inputs = {}
    for i, (item, (shape, dtype)) in enumerate(zip(request.inputs, declared, strict=True)):
        count = math.prod(shape)
        if raw:
            if len(raw[i]) != count * dtype.itemsize:
                raise ProtocolError(f"input {item.name!r}: {len(raw[i])} raw bytes do not "
                                    f"match shape {shape} of {item.datatype} "
                                    f"({count * dtype.itemsize} bytes)")
            array = np.frombuffer(raw[i], dtype=dtype)
        elif item.datatype == "FP32" and len(item.contents.fp32_contents) == count:
            array = np.asarray(item.contents.fp32_contents, dtype=np.float32)
        else:
            raise ProtocolError(f"input {item.name!r}: give its {count} values as raw "
                                "contents (or fp32_contents for FP32)")
        if item.name in inputs:
            raise ProtocolError(f"input {item.name!r} is given twice")
        inputs[item.name] = torch.from_numpy(array.astype(np.float32).reshape(shape))
    return inputs, _timeout_ms(request)


def _declared(item) -> tuple[list[int], np.dtype]:
    if item.datatype not in DATATYPES:
        raise ProtocolError(f"input {item.name!r} has datatype {item.datatype}; this model "
                            f"takes {' or '.join(DATATYPES)}")
    shape = list(item.shape)
    if any(d < 0 for d in shape):
        raise ProtocolError(f"input {item.name!r} has an invalid shape {shape}")
    return shape, np.dtype(DATATYPES[item.datatype])


def _timeout_ms(request: pb.ModelInferRequest) -> float | None:
    """The `timeout` parameter (microseconds, as tritonclient sends it) in ms, or None."""
    if "timeout" not in request.parameters:
        return None
    value = request.parameters["timeout"].int64_param
    if value <= 0:
        raise ProtocolError(f"timeout must be a positive number of microseconds, got {value}")
    return value / 1000


def encode_response(model: str, request: pb.ModelInferRequest,
                    outputs: dict[str, torch.Tensor]) -> pb.ModelInferResponse:
    """Every output the request names (all when it names none), FP32 as raw contents."""
    wanted = [o.name for o in request.outputs] or list(outputs)
    unknown = [n for n in wanted if n not in outputs]
    if unknown:
        raise ProtocolError(f"unknown output(s) {unknown}; this model gives {list(outputs)}")
    response = pb.ModelInferResponse(model_name=model, model_version="1", id=request.id)
    for name in wanted:
        array = outputs[name].detach().cpu().numpy().astype(np.float32, copy=False)
        response.outputs.add(name=name, datatype="FP32", shape=list(array.shape))
        response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
    return response


async def start_grpc(service: Service, host: str, port: int) -> grpc.aio.Server:
    """The gRPC server on host:port, started on the running event loop."""
    limit = service.config.max_body_bytes
    # Rpcs left to the generated base class are plain functions: they run on this pool.
    server = grpc.aio.server(ThreadPoolExecutor(1, thread_name_prefix="i2i-grpc"),
                             options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", -1),
                                      ("grpc.so_reuseport", 0)])   # a taken port fails
    rpc.add_GRPCInferenceServiceServicer_to_server(Servicer(service), server)
    try:
        server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as err:
        raise RuntimeError(f"cannot serve gRPC on {host}:{port} ({err}); is the port in "
                           "use? pick another with --grpc-port") from err
    await server.start()
    return server
