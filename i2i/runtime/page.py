"""What i2i-serve's web page needs from the server: its static files (shipped in
i2i/runtime/static/, no build step, nothing fetched from elsewhere), the model description it
builds its controls from (GET /v1/models), sample pictures from the synthetic domain
(GET /v1/samples/{i}.png) and the JSON answer of /v1/translate (asked for with
`Accept: application/json`).

The page reads tensor kinds, never model names: an image input beyond the first is a file
field (lomit's exemplar), a mask input a scheme select or a painted mask, a knob a slider over
its range.
"""

from __future__ import annotations

import base64
from importlib import resources

from ..data.masks import REQUIRED, SCHEMES
from ..data.shapes import DOMAINS, SyntheticShapes
from ..engines import EngineSpec
from ..models.spec import TensorSpec
from . import images
from .kinds import mask_input
from .protocol import ProtocolError
from .resolution import POLICIES
from .trace import Trace
from .translation import Translated

FILES = {"index.html": "text/html; charset=utf-8", "page.js": "text/javascript; charset=utf-8",
         "page.css": "text/css; charset=utf-8"}
SAMPLES = 6                         # sample pictures offered per domain
SAMPLE_TASK = "circle2square"       # the synthetic task the samples are drawn from
# Mask schemes a request may name: those needing no argument (attention reads a server file).
OFFERED_SCHEMES = [name for name in SCHEMES if name not in REQUIRED]


def static_file(name: str) -> tuple[bytes, str]:
    """(content, media type) of one of the page's files; ProtocolError 404 for anything else."""
    if name not in FILES:
        raise ProtocolError(f"no such page file {name!r}; the page has {sorted(FILES)}",
                            status=404)
    return resources.files(__package__).joinpath("static", name).read_bytes(), FILES[name]


def _tensor(t: TensorSpec) -> dict:
    entry = {"name": t.name, "kind": t.kind, "channels": t.channels}
    if t.kind == "knob":
        entry["range"] = list(t.range)
    if t.over:
        entry["over"] = t.over
    return entry


def model_info(specs: dict[str, EngineSpec]) -> dict:
    """GET /v1/models: the model (as the first engine runs it), its signatures by tensor kind,
    the resolution policies, the mask schemes and the engines loaded (name -> spec, in order)."""
    first = next(iter(specs.values()))
    mask = mask_input(first)
    required = mask_input(first, required=True)
    every = first.model_signatures
    return {
        "model": first.model,
        "default_size": list(first.default_size),       # (H, W) the model was trained at
        "fixed_size": list(first.size) if first.size else None,
        "size_multiple": first.size_multiple,
        "signatures": {label: {"inputs": [_tensor(t) for t in s.inputs],
                               "outputs": [_tensor(t) for t in s.outputs],
                               "runs": label in first.signatures}
                       for label, s in every.items()},
        "images": [t.name for t in first.default.of_kind("image")],
        "knobs": {t.name: list(t.range) for s in every.values() for t in s.of_kind("knob")},
        "mask": None if mask is None else {"name": mask.name, "required": required is not None},
        "outputs": list(dict.fromkeys(t.name for s in every.values() for t in s.outputs)),
        "resolution": list(POLICIES),
        "mask_schemes": OFFERED_SCHEMES,
        "engines": [{"name": name, "precision": s.precision, "device": s.device,
                     "choice": s.choice} for name, s in specs.items()],
        "samples": {"count": SAMPLES, "domains": list(DOMAINS), "task": SAMPLE_TASK},
    }


def sample_png(spec: EngineSpec, index: int, domain: str) -> bytes:
    """Sample picture `index` of `domain` of the synthetic task, at the model's size (its fixed
    size, else the size it was trained at; the shorter side where that is not square)."""
    if not 0 <= index < SAMPLES:
        raise ProtocolError(f"no sample {index}; samples are numbered 0 to {SAMPLES - 1}",
                            status=404)
    if domain not in DOMAINS:
        raise ProtocolError(f"domain must be one of {', '.join(DOMAINS)}, got {domain!r}")
    side = min(spec.size or spec.default_size)
    shapes = SyntheticShapes(SAMPLE_TASK, side, split="test", seed=0)
    image, _ = shapes.sample(domain, index)                     # (3, S, S) in [-1, 1]
    return images.to_png(image, (side, side))


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def json_answer(done: Translated, trace: Trace, spec: EngineSpec, engine: str) -> dict:
    """The JSON answer of /v1/translate: every output (and mask input as used) as a PNG data
    URL, the mask to show beside the picture, what ran it and how long it took."""
    return {"outputs": {name: _data_url(png) for name, png in done.every.items()},
            "mask": done.mask and _data_url(done.every[done.mask]),
            "mask_name": done.mask,
            "engine": engine, "precision": spec.precision, "device": spec.device,
            "batch": trace.rows(), "timing_ms": trace.timing_ms(),
            "size": list(done.size), "notes": done.notes}


def wants_json(accept: str) -> bool:
    """Whether the Accept header asks for the JSON answer rather than the PNG."""
    return "application/json" in accept.lower()

