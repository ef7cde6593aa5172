"""What /v1/translate reads from a request: the uploaded files, the resolution policy, a mask
scheme named in the query, and the decoded pictures; every mistake a ProtocolError (4xx)."""

from __future__ import annotations

from PIL import Image
from starlette.requests import Request

from ..data.masks import parse_mask_spec
from ..engines import EngineSpec
from ..models.spec import TensorSpec
from . import images
from .kinds import input_kinds, mask_input
from .pictures import Scheme
from .protocol import ProtocolError
from .resolution import Resolution


async def uploads(request: Request, body: bytes, primary: str) -> dict[str, bytes]:
    """{field: bytes} from a multipart form, or {primary: body} for a raw upload (primary: the
    name of the model's first image input)."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        return {primary: body}
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
    if primary not in files and len(files) == 1:
        files[primary] = files.pop(next(iter(files)))
    return files


def resolution_of(query, budget: int) -> Resolution:
    """?resolution=auto|native|tile|mask|resize[&working=PIXELS]; `budget`: the most pixels
    one engine run may take (larger pictures are tiled under auto, refused under native)."""
    working = query.get("working")
    if working is not None and not (working.isdigit() and 0 < int(working) <= 8192):
        raise ProtocolError(f"working must be a whole number of pixels from 1 to 8192, got "
                            f"{working!r}")
    return Resolution(query.get("resolution", "auto"), int(working) if working else None,
                      budget)


def scheme_of(query, model: str, mask: TensorSpec | None, files: dict[str, bytes]
            ) -> Scheme | None:
    """The query's mask scheme, or None when it names none; ProtocolError for a bad one."""
    text, seed = query.get("mask"), query.get("seed")
    if text is None:
        if seed is not None:
            raise ProtocolError("seed goes with a mask scheme, e.g. ?mask=rects&seed=3")
        return None
    if mask is None:
        raise ProtocolError(f"{model} takes no mask; leave out ?mask=")
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
    return Scheme(mask, sampler, int(seed or 0), f"{mask.name}={text}")


def decode_files(files: dict[str, bytes], spec: EngineSpec, max_pixels: int,
            scheme: Scheme | None = None
            ) -> tuple[dict[str, images.Picture], dict[str, Image.Image]]:
    """The uploaded pictures (with their alpha and notes) and grey mask pictures by name."""
    primary = spec.default.image.name
    if primary not in files:
        raise ProtocolError(f"send an image: the raw request body, or a multipart field "
                            f"named {primary!r}")
    wanted = [t.name for t in spec.default.of_kind("image")]
    missing = [n for n in wanted if n not in files]
    if missing:
        raise ProtocolError(f"{spec.model} takes the images {wanted}; missing {missing}: send "
                            "a multipart form with one file field per name")
    required = mask_input(spec, required=True)
    if required is not None and required.name not in files and scheme is None:
        raise ProtocolError(f"{spec.model} needs a {required.name} (1 = translate, 0 = keep): "
                            "upload a grey image of the image's size as the multipart file "
                            f"{required.name!r}, or name a scheme in the query, e.g. "
                            "?mask=center:0.5 or ?mask=rects&seed=0")
    kinds = input_kinds(spec)
    unknown = sorted(set(files) - set(kinds))
    if unknown:
        raise ProtocolError(f"unknown multipart field(s) {unknown}; {spec.model} takes "
                            f"{sorted(k for k, kind in kinds.items() if kind != 'knob')} as "
                            "files (knobs go in the query)")
    pictures = {n: images.decode_picture(data, max_pixels, n) for n, data in files.items()
                if kinds.get(n) == "image"}
    masks = {n: images.decode(data, max_pixels, n, mode="L") for n, data in files.items()
             if kinds.get(n) == "mask"}
    return pictures, masks
