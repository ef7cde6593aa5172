"""One picture translation as /v1/translate answers it: uploaded files and query parameters in,
PNG bytes out. The HTTP endpoint and the Triton Python-backend model (triton_python.py) both
call `translate_upload`, so a picture gets the same decoding, resolution policy and encoding
whichever server it reaches.

The query parameters are /v1/translate's: `output`, `resolution`, `working`, `mask` (a scheme),
`seed`, and the model's knobs by name (`strength`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from ..engines import EngineSpec
from . import images, resolution
from .kinds import knob_inputs, mask_input
from .pictures import build_inputs, full_size_check
from .protocol import ProtocolError
from .resolution import Run
from .uploads import decode_files, resolution_of, scheme_of

Cpu = Callable[..., Awaitable]      # cpu(fn, *args): fn(*args) off the event loop


@dataclass(frozen=True)
class Translated:
    png: bytes
    notes: list[str]                # what decoding chose (the first of several frames), if any


async def translate_upload(spec: EngineSpec, files: dict[str, bytes], query: Mapping[str, str],
                           run: Run, cpu: Cpu, max_pixels: int, max_run_pixels: int
                           ) -> Translated:
    """files: {input name: encoded picture} (the model's image inputs, and a grey mask file);
    run: an async engine call (the server's batched infer); every mistake a ProtocolError or
    InputError (4xx)."""
    name = spec.model
    knobs = knob_inputs(query, spec)
    scheme = scheme_of(query, name, mask_input(spec), files)
    policy = resolution_of(query, max_run_pixels)
    given, masks = await cpu(decode_files, files, spec, max_pixels, scheme)
    decoded = {k: p.image for k, p in given.items()}
    inputs = await cpu(build_inputs, spec, decoded, masks, scheme, knobs)
    signature = await cpu(full_size_check, spec, inputs)
    # output=NAME: an output, or a mask input as it was used
    described = {t.name: t for t in signature.outputs}
    described.update({t.name: t for t in signature.of_kind("mask") if t.name not in described})
    want = query.get("output", "translation")
    if want not in described:
        raise ProtocolError(f"output={want!r} is not an output of {name}; choose from "
                            f"{list(described)}")
    outputs = await resolution.translate(run, spec, signature, inputs, policy, cpu)
    over = given[described[want].over or signature.image.name]
    shown = outputs[want] if want in outputs else inputs[want]
    png = await cpu(images.output_png, shown[0], described[want], over.image.size, over.alpha)
    return Translated(png, [p.note for p in given.values() if p.note])
