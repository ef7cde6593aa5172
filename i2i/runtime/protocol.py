"""The KServe v2 / Triton HTTP inference protocol: request parsing and response encoding,
including the binary tensor data extension (`Inference-Header-Content-Length`).

Only what i2i's models need: FP32 and FP16 tensors. This layer decodes the wire format; whether
the tensors fit the model (names, shapes, values) is checked once, by i2i.engines.check_batch.
Every malformed request raises ProtocolError (an InputError) with a message for the client and
a 4xx status.
"""

from __future__ import annotations

import json
import math
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


MAX_DEPTH = 16                      # JSON nesting a request may use (it needs 4)


def parse_infer(body: bytes, header_length: str | None, max_elements: int | None = None
                ) -> InferRequest:
    """Decode a v2 infer request into float32 tensors by input name. max_elements: the most
    values one request may carry in all (checked from the declared shapes before any data is
    converted)."""
    json_part, blobs = _split(body, header_length)
    request = _json(json_part)
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ProtocolError("request must be a JSON object with an 'inputs' list")
    params = _object(request.get("parameters"), "parameters")
    declared = [_declared(item) for item in request["inputs"]]
    total = sum(count for _, _, count in declared)
    if max_elements is not None and total > max_elements:
        raise ProtocolError(f"the inputs hold {total} values; this server takes at most "
                            f"{max_elements} per request (raise it with --max-pixels)",
                            status=413)
    inputs, offset = {}, 0
    for item, (name, shape, count) in zip(request["inputs"], declared, strict=True):
        array, offset = _input(item, name, shape, count, blobs, offset)
        if name in inputs:
            raise ProtocolError(f"input {name!r} is given twice")
        inputs[name] = torch.from_numpy(np.array(array, dtype=np.float32))   # own, writable
    if offset != len(blobs):
        raise ProtocolError(f"binary data holds {len(blobs)} bytes but the inputs declare "
                            f"{offset}")
    binary_default = _flag(params.get("binary_data_output", False), "binary_data_output")
    outputs = {}
    for item in request.get("outputs") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError("each requested output needs a 'name' (a string)")
        options = _object(item.get("parameters"), f"output {item['name']!r} parameters")
        outputs[item["name"]] = _flag(options.get("binary_data", binary_default), "binary_data")
    return InferRequest(id=request.get("id"), inputs=inputs, binary_outputs=outputs or
                        {"*": binary_default}, timeout_ms=_timeout(params.get("timeout")))


def _json(text: bytes) -> object:
    """The parsed JSON, refusing nesting deeper than MAX_DEPTH before the parser recurses."""
    depth = deepest = 0
    for byte in text:                   # brackets inside strings only overcount: still safe
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                raise ProtocolError(f"request JSON is nested more than {MAX_DEPTH} levels deep")
        elif byte in b"]}":
            depth -= 1
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ProtocolError(f"request body is not valid JSON: {err}") from err


def _object(value: object, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{what} must be true or false, got {value!r}")
    return value


def _timeout(value: object) -> float | None:
    """The request's timeout parameter (microseconds) in milliseconds, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or value <= 0:
        raise ProtocolError(f"timeout must be a positive number of microseconds, got {value!r}")
    return float(value) / 1000


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


def _declared(item: object) -> tuple[str, list[int], int]:
    """(name, shape, element count) of one input entry, checked before any data is read."""
    if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= set(item):
        raise ProtocolError("each input needs 'name', 'shape' and 'datatype'")
    name, shape = item["name"], item["shape"]
    if not isinstance(name, str):
        raise ProtocolError(f"an input name must be a string, got {name!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r} has an invalid shape {shape!r}")
    return name, shape, math.prod(shape)       # Python ints: no overflow


def _input(item: dict, name: str, shape: list[int], count: int, blobs: bytes, offset: int
           ) -> tuple[np.ndarray, int]:
    datatype = item["datatype"]
    if datatype not in DATATYPES:
        raise ProtocolError(f"input {name!r} has datatype {datatype}; this model takes "
                            f"{' or '.join(DATATYPES)}")
    dtype = np.dtype(DATATYPES[datatype])
    size = _object(item.get("parameters"), f"input {name!r} parameters").get(
        "binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise ProtocolError(f"input {name!r}: binary_data_size must be an integer, got "
                                f"{size!r}")
        if size != count * dtype.itemsize:
            raise ProtocolError(f"input {name!r}: binary_data_size {size} does not match shape "
                                f"{shape} of {datatype} ({count * dtype.itemsize} bytes)")
        if offset + size > len(blobs):
            raise ProtocolError(f"input {name!r}: the body ends before its {size} bytes")
        array = np.frombuffer(blobs, dtype=dtype, count=count, offset=offset)
        return array.reshape(shape), offset + size
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
    return array.reshape(shape), offset


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
            if not np.isfinite(array).all():
                raise ProtocolError(f"output {name!r} holds values that are not finite (NaN "
                                    "or infinity), which JSON cannot carry; ask for it as "
                                    "binary data (binary_data: true)", status=500)
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
