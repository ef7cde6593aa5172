"""The KServe v2 / Triton HTTP inference protocol: request parsing and response encoding,
including the binary tensor data extension (`Inference-Header-Content-Length`).

Only what i2i's models need: FP32 and FP16 tensors. This layer decodes the wire format; whether
the tensors fit the model (names, shapes, values) is checked once, by i2i.engines.check_batch.
Every malformed request raises ProtocolError (an InputError) with a message for the client and
a 4xx status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from ..models.spec import InputError

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = {"FP32": np.float32, "FP16": np.float16}
NAMES = {"float32": "FP32", "float16": "FP16"}


class ProtocolError(InputError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, torch.Tensor]                 # float32 (N, C, H, W)
    binary_outputs: dict[str, bool]                 # requested output name -> binary?
    timeout_ms: float | None


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """Decode a v2 infer request into float32 tensors by input name."""
    json_part, blobs = _split(body, header_length)
    try:
        request = json.loads(json_part)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ProtocolError(f"request body is not valid JSON: {err}") from err
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ProtocolError("request must be a JSON object with an 'inputs' list")
    inputs, offset = {}, 0
    for item in request["inputs"]:
        name, array, offset = _input(item, blobs, offset)
        if name in inputs:
            raise ProtocolError(f"input {name!r} is given twice")
        inputs[name] = torch.from_numpy(np.array(array, dtype=np.float32))   # own, writable
    if offset != len(blobs):
        raise ProtocolError(f"binary data holds {len(blobs)} bytes but the inputs declare "
                            f"{offset}")
    params = request.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", False))
    outputs = {}
    for item in request.get("outputs") or []:
        if not isinstance(item, dict) or "name" not in item:
            raise ProtocolError("each requested output needs a 'name'")
        outputs[item["name"]] = bool((item.get("parameters") or {}).get("binary_data",
                                                                         binary_default))
    timeout = params.get("timeout")
    return InferRequest(id=request.get("id"), inputs=inputs, binary_outputs=outputs or
                        {"*": binary_default},
                        timeout_ms=float(timeout) / 1000 if timeout else None)  # timeout in us


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError as err:
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from err
    if not 0 <= n <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} {n} is outside the body ({len(body)} bytes)")
    return body[:n], body[n:]


def _input(item: object, blobs: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= set(item):
        raise ProtocolError("each input needs 'name', 'shape' and 'datatype'")
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    if datatype not in DATATYPES:
        raise ProtocolError(f"input {name!r} has datatype {datatype}; this model takes "
                            f"{' or '.join(DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r} has an invalid shape {shape!r}")
    count = int(np.prod(shape)) if shape else 1
    dtype = np.dtype(DATATYPES[datatype])
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != count * dtype.itemsize:
            raise ProtocolError(f"input {name!r}: binary_data_size {size} does not match shape "
                                f"{shape} of {datatype} ({count * dtype.itemsize} bytes)")
        if offset + size > len(blobs):
            raise ProtocolError(f"input {name!r}: the body ends before its {size} bytes")
        array = np.frombuffer(blobs, dtype=dtype, count=count, offset=offset)
        return name, array.reshape(shape), offset + size
    data = item.get("data")
    if data is None:
        raise ProtocolError(f"input {name!r} has neither 'data' nor binary_data_size")
    try:
        array = np.asarray(data, dtype=dtype).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ProtocolError(f"input {name!r}: data is not a list of numbers ({err})") from err
    if array.size != count:
        raise ProtocolError(f"input {name!r}: shape {shape} needs {count} values, data has "
                            f"{array.size}")
    return name, array.reshape(shape), offset


def encode_infer(model: str, request: InferRequest, outputs: dict[str, torch.Tensor]
                 ) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a v2 infer response, binary where the request asked for it."""
    wanted = request.binary_outputs
    names = list(outputs) if "*" in wanted else [n for n in wanted if n in outputs]
    unknown = [n for n in wanted if n != "*" and n not in outputs]
    if unknown:
        raise ProtocolError(f"unknown output(s) {unknown}; this model gives {list(outputs)}")
    entries, blobs = [], []
    for name in names:
        array = outputs[name].detach().cpu().numpy().astype(np.float32, copy=False)
        entry = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
        if wanted.get(name, wanted.get("*", False)):
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    response = {"model_name": model, "model_version": "1", "outputs": entries}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream",
                                      HEADER_LENGTH: str(len(header))}
