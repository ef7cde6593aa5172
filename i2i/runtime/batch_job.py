"""Offline batch translation of a folder through the same engine and batcher as the server.

    i2i-serve --export exports/additive --input-dir photos/ --output-dir out/ [--masks]
    i2i-serve --export exports/lomit --input-dir photos/ --output-dir out/ --exemplar ref.png
    i2i-serve --export exports/maskcyclegan --input-dir photos/ --output-dir out/ --mask rects

Outputs are PNGs at each input's size named after it (`cat.jpg` -> `cat.png`, and
`cat.mask.png` with --masks). Unreadable files are reported and skipped while the rest
complete; a re-run skips every input whose outputs already exist. A model with an exemplar
input (lomit) translates every input towards the one exemplar image given.

A model with a mask input (maskcyclegan: required; lomit: optional) takes --mask: a scheme of
i2i.data.masks (center:0.5, rects:..., attention:map.png), drawn on each input with a seed made from
its file name, so a re-run draws the same masks; or one grey mask image (pixel / 255) stretched
to the model's size like every input. With --masks, a model without a mask output writes the
mask it was given.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..atomic import write_bytes
from ..data.masks import MaskSampler, parse_mask_spec
from ..engines import EngineSpec, check_batch
from ..models.spec import InputError, TensorSpec
from . import images
from .batcher import Batcher, BatcherError
from .kinds import mask_input

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass
class JobReport:
    translated: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)          # outputs already there
    failed: list[tuple[Path, str]] = field(default_factory=list)


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """Input -> output stem; the full file name where two inputs share a stem."""
    stems: dict[str, int] = {}
    for p in inputs:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return {p: p.stem if stems[p.stem] == 1 else p.name for p in inputs}


def translate_folder(engine, input_dir: Path, output_dir: Path, masks: bool = False,
                     max_batch: int = 8, max_delay_ms: float = 5.0,
                     max_pixels: int = images.DEFAULT_MAX_PIXELS,
                     progress: bool = True, pictures: dict[str, Path] | None = None,
                     mask: str | None = None) -> JobReport:
    """pictures: {input name: image path} for the model's image inputs besides the translated
    one (lomit's exemplar: the image every input is translated towards).
    mask: a mask scheme or a grey mask image's path, for models with a mask input."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    shared = _shared_inputs(engine.spec, pictures or {}, max_pixels)
    fixed, scheme = _masking(engine.spec, mask, max_pixels)
    shared.update(fixed)
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    output_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(engine, files, output_dir, masks, max_batch, max_delay_ms,
                            max_pixels, progress, shared, scheme))


@dataclass(frozen=True)
class _Scheme:
    """--mask SCHEME: drawn on each input for the mask input `target`."""

    target: TensorSpec
    sampler: MaskSampler
    text: str


def _masking(spec: EngineSpec, mask: str | None, max_pixels: int
             ) -> tuple[dict[str, torch.Tensor], _Scheme | None]:
    """What --mask gives the inputs: a mask file's (1, 1, H, W) mask, shared by all, or the
    scheme drawn for each; ({}, None) without --mask, where the model can do without one."""
    target = mask_input(spec)
    if mask is None:
        if mask_input(spec, required=True) is not None:
            raise ValueError(f"{spec.model} translates the pixels a mask marks (1 = translate, "
                             "0 = keep): pass --mask SPEC_OR_FILE, a scheme such as center:0.5 "
                             "or rects (drawn on each input, seeded by its file name) or one "
                             "grey mask image for every input")
        return {}, None
    if target is None:
        raise ValueError(f"{spec.model} takes no mask; leave out --mask")
    path = Path(mask)
    if path.is_file():
        picture = images.decode(path.read_bytes(), max_pixels, f"mask {path}", mode="L")
        return {target.name: images.to_mask(picture, spec.size or spec.default_size)[None]}, None
    try:
        return {}, _Scheme(target, parse_mask_spec(mask), mask)
    except ValueError as err:
        raise ValueError(f"--mask {mask!r} is neither a mask image file nor a mask scheme: "
                         f"{err}") from err


def _shared_inputs(spec: EngineSpec, pictures: dict[str, Path], max_pixels: int
                   ) -> dict[str, torch.Tensor]:
    """The inputs every image is sent with: one (1, C, H, W) picture per image input of the
    model besides the translated one (`pictures` gives their files by input name)."""
    wanted = [t.name for t in spec.default.of_kind("image")][1:]
    unknown = sorted(set(pictures) - set(wanted))
    if unknown:
        raise ValueError(f"{spec.model} takes no {' or '.join(unknown)}; leave out "
                         + " ".join(f"--{name}" for name in unknown))
    missing = [name for name in wanted if name not in pictures]
    if missing:
        name = missing[0]
        raise ValueError(f"{spec.model} translates each image towards an {name}: pass --{name} "
                         f"PATH (or --input {name}=PATH: one image used for every input)")
    shared = {}
    for name, path in pictures.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{name} {path} not found")
        picture = images.decode(path.read_bytes(), max_pixels, f"{name} {path}")
        shared[name] = images.to_tensor(picture, spec.size or spec.default_size)[None]
    return shared


def _seed(path: Path) -> int:
    """A mask scheme's seed for one input: from its file name, the same on every run."""
    return zlib.crc32(path.name.encode())


async def _run(engine, files, output_dir, masks, max_batch, max_delay_ms, max_pixels,
               progress, shared, scheme) -> JobReport:
    report = JobReport()
    spec = engine.spec
    primary = spec.default.image.name
    size = spec.size or spec.default_size
    given = mask_input(spec)          # --masks writes the mask given where no output is one
    batcher = Batcher(engine.run, min(max_batch, spec.max_batch_size), max_delay_ms,
                      max_queue=4 * max_batch + 8, default_timeout_ms=None)
    await batcher.start()
    names = output_names(files)
    limit = asyncio.Semaphore(2 * max_batch)
    bar = tqdm(total=len(files), desc="translating", disable=not progress, unit="img")

    async def one(path: Path) -> None:
        out = output_dir / f"{names[path]}.png"
        mask_out = output_dir / f"{names[path]}.mask.png"
        if out.exists() and (not masks or mask_out.exists()):
            report.skipped.append(path)
            bar.update()
            return
        async with limit:
            try:
                if path.suffix.lower() not in EXTENSIONS:
                    raise InputError(f"not an image file ({path.suffix or 'no extension'})")
                picture = images.decode(path.read_bytes(), max_pixels, path.name)
                inputs = {primary: images.to_tensor(picture, size)[None], **shared}
                if scheme is not None:
                    inputs[scheme.target.name] = images.drawn_mask(
                        scheme.sampler, picture.size, size, _seed(path), f"--mask {scheme.text}")
                signature = spec.signatures[spec.signature(inputs)]
                check_batch(spec, inputs)
                result = await batcher.submit(inputs)
                write_bytes(out, images.to_png(result["translation"][0], picture.size))
                shown = _mask_shown(signature, result, inputs, given)
                if masks and shown is not None:
                    t, value = shown
                    write_bytes(mask_out, images.output_png(value[0], t, picture.size))
                report.translated.append(path)
            except (InputError, BatcherError, OSError) as err:
                report.failed.append((path, str(err)))
                tqdm.write(f"skipped {path}: {err}")
            finally:
                bar.update()

    try:
        await asyncio.gather(*(one(p) for p in files))
    finally:
        bar.close()
        await batcher.stop(drain=True)
    return report


def _mask_shown(signature, result: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
                given: TensorSpec | None) -> tuple[TensorSpec, torch.Tensor] | None:
    """What --masks writes: the signature's first mask output (mask or signed mask), else the
    mask input it was given; None where there is neither."""
    for t in signature.outputs:
        if t.kind in ("mask", "signed_mask"):
            return t, result[t.name]
    if given is not None and given.name in inputs:
        return given, inputs[given.name]
    return None
