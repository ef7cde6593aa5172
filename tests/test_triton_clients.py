"""tritonclient.http and tritonclient.grpc against one i2i-serve process (--grpc-port): the same
end-to-end checks through both (infer with binary tensors, metadata, config, statistics,
repository index, errors), then what only one of them has."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from i2i.engines import open_engine
from i2i.models import load
from i2i.runtime import cli
from i2i.runtime.grpc_service import encode_response, parse_request
from i2i.runtime.protocol import ProtocolError

from .server_utils import free_port, post, running, tiny_checkpoint

KEY = "grpc-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
CLIENTS = {"http": httpclient, "grpc": grpcclient}
# Triton's codes for the same failure over each protocol
NOT_FOUND = {"http": "404", "grpc": "StatusCode.NOT_FOUND"}
INVALID = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}
UNAUTHENTICATED = {"http": "401", "grpc": "StatusCode.UNAUTHENTICATED"}
STAT_KEYS = {"success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
             "cache_hit", "cache_miss"}                       # Triton's inference_stats


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def server(checkpoint):
    grpc_port = free_port()
    with running(["--checkpoint", str(checkpoint), "--max-batch", "8", "--max-delay-ms", "10",
                  "--api-key", KEY, "--grpc-port", str(grpc_port)]) as proc:
        proc.grpc_url = f"127.0.0.1:{grpc_port}"
        yield proc


@pytest.fixture(scope="module")
def module(checkpoint):
    return load(checkpoint)[0]


@pytest.fixture(params=list(CLIENTS))
def protocol(request):
    return request.param


def connect(server, protocol: str):
    if protocol == "grpc":
        return grpcclient.InferenceServerClient(server.grpc_url)
    return httpclient.InferenceServerClient(server.url.removeprefix("http://"))


def get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}"}       # a fresh dict: tritonclient adds to it


def as_json(client, protocol: str, call: str, *args, **kwargs):
    """tritonclient's answer as JSON; gRPC's int64 fields (strings in proto JSON) as ints."""
    if protocol == "http":
        return getattr(client, call)(*args, headers=auth(), **kwargs)
    return _ints(getattr(client, call)(*args, headers=auth(), as_json=True, **kwargs))


TEXT = {"name", "version", "versions", "state", "reason", "string_value", "platform"}


def _ints(value, key: str = ""):
    """proto JSON's int64 strings ("-1") as ints, names and versions left as text."""
    if isinstance(value, dict):
        return {k: _ints(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v, key) for v in value]
    if isinstance(value, str) and key not in TEXT and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 16, 16)).astype(np.float32)


def infer(client, protocol: str, x: np.ndarray, outputs: list[str] | None = None,
          model: str = "additive"):
    lib = CLIENTS[protocol]
    image = lib.InferInput("image", list(x.shape), "FP32")
    image.set_data_from_numpy(x)                              # binary: raw contents / blobs
    wanted = [lib.InferRequestedOutput(n) for n in outputs] if outputs else None
    return client.infer(model, [image], outputs=wanted, headers=auth())


def test_infer_with_binary_tensors_matches_the_model(server, module, protocol):
    client = connect(server, protocol)
    assert client.is_server_live() and client.is_server_ready()          # health stays open
    assert client.is_model_ready("additive", headers=auth())
    assert not client.is_model_ready("adittive", headers=auth())
    x = images(3, 0)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in module(torch.from_numpy(x)).items()}
    result = infer(client, protocol, x)
    for name in ("translation", "mask"):
        np.testing.assert_allclose(result.as_numpy(name), want[name], atol=1e-5)
    only = infer(client, protocol, x, ["mask"])
    assert only.as_numpy("translation") is None
    np.testing.assert_allclose(only.as_numpy("mask"), want["mask"], atol=1e-5)


def test_metadata_and_model_config(server, protocol):
    client = connect(server, protocol)
    meta = as_json(client, protocol, "get_model_metadata", "additive")
    assert [t["name"] for t in meta["inputs"]] == ["image"]
    assert [t["name"] for t in meta["outputs"]] == ["translation", "mask"]
    assert meta["inputs"][0]["shape"] == [-1, 3, -1, -1]
    config = as_json(client, protocol, "get_model_config", "additive")
    config = config["config"] if protocol == "grpc" else config
    assert config["name"] == "additive" and config["max_batch_size"] == 8
    assert [(t["name"], t["data_type"], t["dims"], t.get("optional", False))
            for t in config["input"]] == [("image", "TYPE_FP32", [3, -1, -1], False),
                                          ("strength", "TYPE_FP32", [1], True)]
    assert [t["name"] for t in config["output"]] == ["translation", "mask"]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 10_000
    signatures = json.loads(config["parameters"]["signatures"]["string_value"])
    assert signatures == {"default": ["image"], "strength": ["image", "strength"]}


def test_statistics_count_requests_rows_and_batches(server, protocol):
    client = connect(server, protocol)

    def stats() -> dict:
        answer = as_json(client, protocol, "get_inference_statistics", "additive")
        (model,) = answer["model_stats"]
        return model

    before = stats()
    for seed in range(3):
        infer(client, protocol, images(2, seed))
    after = stats()
    assert after["name"] == "additive" and after["version"] == "1"
    assert set(after["inference_stats"]) >= STAT_KEYS - {"fail", "cache_hit", "cache_miss"}
    assert after["inference_count"] - before["inference_count"] == 6          # rows
    assert after["execution_count"] - before["execution_count"] == 3          # one at a time
    done = after["inference_stats"]
    assert done["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert done["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert done["queue"]["count"] == done["compute_infer"]["count"] >= 3
    assert done["compute_infer"]["ns"] > 0
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    assert sizes.get(2, 0) >= 3 and sum(s * n for s, n in sizes.items()) == after[
        "inference_count"]
    assert after["last_inference"] > 0


def test_repository_index(server, protocol):
    client = connect(server, protocol)
    index = as_json(client, protocol, "get_model_repository_index")
    models = index["models"] if protocol == "grpc" else index
    assert models == [{"name": "additive", "version": "1", "state": "READY"}]


@pytest.mark.parametrize("call", ["get_model_metadata", "get_model_config",
                                  "get_inference_statistics", "infer"])
def test_unknown_model_is_not_found(server, protocol, call):
    client = connect(server, protocol)
    with pytest.raises(InferenceServerException) as err:
        if call == "infer":
            infer(client, protocol, images(1, 0), model="adittive")
        else:
            getattr(client, call)("adittive", headers=auth())
    assert str(err.value.status()) == NOT_FOUND[protocol]
    assert "unknown model 'adittive'" in err.value.message()


def test_bad_datatype_and_wrong_key_are_refused(server, protocol):
    client = connect(server, protocol)
    lib = CLIENTS[protocol]
    ints = lib.InferInput("image", [1, 3, 16, 16], "INT32")
    ints.set_data_from_numpy(np.zeros((1, 3, 16, 16), np.int32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("additive", [ints], headers=auth())
    assert str(err.value.status()) == INVALID[protocol]
    assert "datatype INT32" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_config("additive", headers={"authorization": "Bearer wrong"})
    assert str(err.value.status()) == UNAUTHENTICATED[protocol]
    assert "API key" in err.value.message()
    if protocol == "grpc":                       # counted in /metrics beside HTTP
        text = get(f"{server.url}/metrics")[1].decode()
        assert re.search(r'i2i_requests_total\{endpoint="grpc:ModelConfig",'
                         r'status="UNAUTHENTICATED"\} [1-9]', text), text
        assert re.search(r'i2i_requests_total\{endpoint="grpc:ModelInfer",'
                         r'status="INVALID_ARGUMENT"\} [1-9]', text)


ENDPOINTS = [("GET", "/v2/models/adittive/config", None, 404, "unknown model 'adittive'"),
             ("GET", "/v2/models/additive/versions/2/stats", None, 404, "version 2"),
             ("GET", "/v2/nothing/here", None, 404, "no such endpoint '/v2/nothing/here'"),
             ("GET", "/v2/repository/index", None, 405, "GET is not allowed"),
             ("POST", "/v2/models/additive/config", b"{}", 405, "POST is not allowed"),
             ("POST", "/v2/repository/index", b'{"ready": "yes"}', 400,
              "'ready' must be true or false"),
             ("POST", "/v2/repository/index", b"{ready", 400,
              "the repository index request is not valid JSON"),
             ("POST", "/v2/repository/index", b"[]", 400,
              "the repository index request must be a JSON object, got list")]


@pytest.mark.parametrize("method,path,body,status,message", ENDPOINTS)
def test_http_errors_are_json(server, method, path, body, status, message):
    if method == "GET":
        got, answer = get(server.url + path)
    else:
        got, answer = post(server.url + path, body, HEADERS)
    assert got == status and message in json.loads(answer)["error"], answer


def test_http_statistics_of_every_model_and_ready_only_index(server):
    status, body = get(f"{server.url}/v2/models/stats")
    assert status == 200 and [m["name"] for m in json.loads(body)["model_stats"]] == [
        "additive"]
    status, body = post(f"{server.url}/v2/repository/index", b'{"ready": true}', HEADERS)
    assert status == 200 and [m["state"] for m in json.loads(body)] == ["READY"]


@pytest.mark.parametrize("args,message", [
    (["--port", "9000", "--grpc-port", "9000"], "other than --port (9000)"),
    (["--grpc-port", "70000"], "from 1 to 65535"),
    (["--grpc-port", "9001", "--input-dir", "in", "--output-dir", "out"],
     "--grpc-port goes with serving"),
])
def test_cli_refuses_a_bad_grpc_port(checkpoint, capsys, args, message):
    assert cli.main(["--checkpoint", str(checkpoint), *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_says_how_to_install_grpc(checkpoint, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)            # import grpc -> ImportError
    assert cli.main(["--checkpoint", str(checkpoint), "--grpc-port", "9001"]) == 2
    assert "pip install 'i2i[grpc]'" in capsys.readouterr().err


def test_a_fault_of_the_server_is_answered_as_json(checkpoint, monkeypatch):
    from i2i.runtime import server as server_module
    from i2i.runtime.inprocess import serving
    from i2i.runtime.server import ServerConfig

    def broken(*args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(server_module, "encode_infer", broken)
    engine = open_engine("eager", checkpoint=checkpoint)
    body = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 16, 16],
                                   "datatype": "FP32", "data": [0.0] * 768}]}).encode()
    with serving(engine, ServerConfig(max_batch=2, warmup=False)) as url:
        status, answer = post(f"{url}/v2/models/additive/infer", body)
    assert status == 500
    assert json.loads(answer)["error"] == ("internal server error (RuntimeError); the server "
                                           "log has the details")


def request(*tensors: tuple[str, str, list[int], bytes | None], outputs=(), timeout=None):
    """A ModelInferRequest by hand: (name, datatype, shape, raw bytes or None)."""
    message = pb.ModelInferRequest(model_name="additive")
    for name, datatype, shape, raw in tensors:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw is not None:
            message.raw_input_contents.append(raw)
    for name in outputs:
        message.outputs.add(name=name)
    if timeout is not None:
        message.parameters["timeout"].int64_param = timeout
    return message


ZEROS = np.zeros((1, 3, 4, 4), np.float32).tobytes()
MALFORMED = [
    (request(("image", "FP32", [1, 3, 4, 4], ZEROS), ("strength", "FP32", [1, 1], None)),
     "has 2 inputs but 1 raw_input_contents"),
    (request(("image", "FP32", [1, 3, 4, 4], ZEROS[:-4])), "188 raw bytes do not match shape"),
    (request(("image", "FP32", [1, 3, 4, 4], None)), "give its 48 values as raw contents"),
    (request(("image", "FP32", [1, 3, 4, 4], ZEROS), ("image", "FP32", [1, 3, 4, 4], ZEROS)),
     "input 'image' is given twice"),
    (request(("image", "INT8", [1, 3, 4, 4], ZEROS)), "datatype INT8"),
    (request(("image", "FP32", [1, -3, 4, 4], ZEROS)), "invalid shape"),
    (request(("image", "FP32", [1, 3, 4, 4], ZEROS), timeout=-5),
     "timeout must be a positive number of microseconds, got -5"),
    (request(("image", "FP32", [1, 3, 400, 400], ZEROS)), "this server takes at most 1000"),
]


@pytest.mark.parametrize("message,expected", MALFORMED, ids=[m[1][:24] for m in MALFORMED])
def test_grpc_request_mistakes_are_named(message, expected):
    with pytest.raises(ProtocolError, match=re.escape(expected)):
        parse_request(message, max_elements=1000)


def test_grpc_request_decodes_raw_and_typed_contents_and_names_unknown_outputs():
    x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    inputs, timeout = parse_request(request(("image", "FP16", [1, 3, 4, 4],
                                             x.astype(np.float16).tobytes()), timeout=2500))
    assert timeout == 2.5 and inputs["image"].dtype == torch.float32
    np.testing.assert_array_equal(inputs["image"].numpy(), x)
    typed = request(("image", "FP32", [1, 3, 4, 4], None))
    typed.inputs[0].contents.fp32_contents.extend(x.reshape(-1).tolist())
    np.testing.assert_array_equal(parse_request(typed)[0]["image"].numpy(), x)
    with pytest.raises(ProtocolError, match=r"unknown output\(s\) \['mask2'\]"):
        encode_response("additive", request(outputs=["mask2"]),
                        {"translation": torch.zeros(1, 3, 4, 4)})


def test_grpc_port_in_use_says_so(checkpoint):
    from i2i.runtime.grpc_service import start_grpc
    from i2i.runtime.service import ServerConfig, Service

    service = Service(open_engine("eager", checkpoint=checkpoint), ServerConfig(warmup=False))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"cannot serve gRPC on 127.0.0.1:{port}"):
            asyncio.run(start_grpc(service, "127.0.0.1", port))
