"""One picture translation as /v1/translate answers it: uploaded files and query parameters in,
PNG bytes out. The HTTP endpoint and the Triton Python-backend model (triton_python.py) both
call `translate_upload`, so a picture gets the same decoding, resolution policy and encoding
whichever server it reaches.

The query parameters are /v1/translate's: `output`, `resolution`, `working`, `mask` (a scheme),
`seed`, and the model's knobs by name (`strength`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

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
    png: bytes                      # the output asked for (?output=, default translation)
    notes: list[str]                # what decoding chose (the first of several frames), if any
    size: tuple[int, int] = (0, 0)  # the picture's width and height
    # with every=True: each output and each mask input as used, by name, as PNG
    every: dict[str, bytes] = field(default_factory=dict)
    mask: str | None = None         # which of `every` is the mask (an input, else an output)


async def translate_upload(spec: EngineSpec, files: dict[str, bytes], query: Mapping[str, str],
                           run: Run, cpu: Cpu, max_pixels: int, max_run_pixels: int,
                           every: bool = False) -> Translated:
    """files: {input name: encoded picture} (the model's image inputs, and a grey mask file);
    run: an async engine call (the server's batched infer); every mistake a ProtocolError or
    InputError (4xx). every: encode each output and mask input too (the page's JSON answer)."""
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
    async def encode(name: str) -> bytes:
        over = given[described[name].over or signature.image.name]
        shown = outputs[name] if name in outputs else inputs[name]
        return await cpu(images.output_png, shown[0], described[name], over.image.size,
                         over.alpha)

    notes = [p.note for p in given.values() if p.note]
    size = given[signature.image.name].image.size
    if not every:
        return Translated(await encode(want), notes, size)
    pngs = {name: await encode(name) for name in described}
    masks = [t.name for t in signature.of_kind("mask")] + [
        t.name for t in signature.outputs if t.kind in ("mask", "signed_mask")]
    return Translated(pngs[want], notes, size, pngs, masks[0] if masks else None)
