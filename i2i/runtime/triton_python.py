"""i2i as a model of Triton's Python backend: encoded pictures in, PNG out, through the same
decoding, resolution policy and encoding as i2i-serve's /v1/translate (translation.py).

The repository i2i-export writes holds `<model>_pictures/1/model.py`, which imports
TritonPythonModel from here; the backend's stub process must therefore import i2i and its
engine (README "Triton": the stub runs the first `python3` on the server's PATH, so a
virtualenv's bin/ first on PATH gives it that environment's packages).

    inputs   one encoded picture (PNG, JPEG, ...) per row, BYTES [N, 1]: every image input of
             the model (`image`; LOMIT's `exemplar`) and its mask input (a grey picture)
    params   the request's parameters are /v1/translate's query: output, resolution, working,
             mask (a scheme), seed, and the model's knobs by name (strength)
    output   `picture`, BYTES [N, 1]: the PNG of each row

The config's `export` parameter is the i2i export folder, relative to the model folder (the
repository is the export's triton/ folder: "../.."), `engine` the engine that opens it. The
requests of one execute() call (Triton's dynamic batcher gathers them) and the tiles of each
picture run concurrently through one i2i Batcher, whose engine batches they share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from pathlib import Path

import numpy as np

from ..engines import open_engine
from ..models.spec import InputError
from . import images
from .batcher import Batcher, BatcherError
from .resolution import NATIVE_BUDGET, inline
from .translation import translate_upload

OUTPUT = "picture"
MAX_DELAY_MS = 5.0


class TritonPythonModel:
    """The class Triton's Python backend looks for in model.py."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]).resolve()
        export = (folder / params.get("export", "../..")).resolve()
        max_batch = max(1, int(config.get("max_batch_size", 8)))
        engine = open_engine(params.get("engine", "onnxruntime"), export_dir=export,
                             device=params.get("device", "cpu"), max_batch_size=max_batch)
        self.spec = dataclasses.replace(engine.spec, max_batch_size=min(
            max_batch, engine.spec.max_batch_size))
        self.inputs = [t["name"] for t in config["input"]]
        self.max_pixels = int(params.get("max_pixels", images.DEFAULT_MAX_PIXELS))
        self.max_run_pixels = int(params.get("max_run_pixels", NATIVE_BUDGET))
        # The batcher lives on its own event loop thread; execute() hands it coroutines.
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="i2i-loop",
                                       daemon=True)
        self.thread.start()
        self.batcher = Batcher(engine.run, self.spec.max_batch_size, MAX_DELAY_MS,
                               max_queue=64 * self.spec.max_batch_size,
                               default_timeout_ms=None)
        self.call(self.batcher.start())

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils  # present inside the stub only

        rows = [self.rows(pb_utils, r) for r in requests]

        async def every() -> list:
            return await asyncio.gather(*(self.answer(r) for r in rows), return_exceptions=True)
        answers = self.call(every())
        responses = []
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, InputError | BatcherError):
                    raise answer
                responses.append(pb_utils.InferenceResponse(error=_error(pb_utils, answer)))
                continue
            pngs = np.array(answer, dtype=np.object_).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(OUTPUT, pngs)]))
        return responses

    def rows(self, pb_utils, request) -> list[tuple[dict[str, bytes], dict[str, str]]] | Exception:
        """(files by input name, query) per row of one request, or the InputError to answer."""
        given = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                given[name] = tensor.as_numpy().reshape(-1)      # (N,) of bytes
        try:
            params = json.loads(request.parameters() or "{}")
        except ValueError:
            params = {}
        query = {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in params.items()}
        counts = {name: len(values) for name, values in given.items()}
        if len(set(counts.values())) > 1:
            return InputError(f"every picture input needs the same number of rows; got {counts}")
        n = next(iter(counts.values()), 0)
        return [({name: bytes(values[i]) for name, values in given.items()}, query)
                for i in range(n)]

    async def answer(self, rows) -> list[bytes]:
        """The PNG of every row of one request (its rows concurrently)."""
        if isinstance(rows, Exception):
            raise rows
        done = await asyncio.gather(*(translate_upload(
            self.spec, files, query, self.batcher.submit, inline, self.max_pixels,
            self.max_run_pixels) for files, query in rows))
        return [d.png for d in done]

    def finalize(self) -> None:
        self.call(self.batcher.stop(drain=True))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _error(pb_utils, err: Exception):
    """A TritonError with the code nearest the HTTP status i2i-serve would answer."""
    status = getattr(err, "status", 400)
    names = {503: "UNAVAILABLE", 404: "NOT_FOUND"}
    name = names.get(status, "INVALID_ARG" if 400 <= status < 500 else "INTERNAL")
    code = getattr(pb_utils.TritonError, name, None)
    return pb_utils.TritonError(str(err)) if code is None else pb_utils.TritonError(str(err),
                                                                                     code)
