"""Folder translation: every picture of a folder through one engine, batched, at its own size.

    i2i-translate photos/ out/ --model exports/additive [--masks] [--resolution mask]
    i2i-translate photos/ out/ --model exports/lomit --exemplar ref.png
    i2i-translate photos/ out/ --model exports/maskcyclegan --mask rects [--recursive]

Outputs are PNGs at each input's size named after it (`cat.jpg` -> `cat.png`, and
`cat.mask.png` with --masks), in the same sub-folders with --recursive; where two inputs would
write one file (`a.png` and `a.jpg`, or `x.png`'s mask and the input `x.mask.png`), the full
file name and then a `~N` suffix tell them apart, the same way on every run, so no input's output
overwrites another's. Each output records the model, weights, policy and inputs that made it and
the input's sha256 and size (PNG text `i2i`): a re-run skips an input only when each of its
outputs decodes completely at the input's size with the same record, and redoes the others (a
truncated or corrupt output, a changed input, another model). Outputs are written atomically: a
failed write (a full disk) leaves no partial or temporary file, is reported as failed, and the
next run redoes just that input. Unreadable files are reported and skipped while the rest
complete. At the end `index.html` (gallery.py) shows every input beside its outputs and lists
the files not translated, with why; FolderOptions(html=False) (--no-html) leaves it out. The
input folder is refused as the output folder (and, with --recursive, any folder inside it),
since outputs there would be read back as inputs. A model with a second image input (lomit's
exemplar) translates every input with the one picture given for it.

A model with a mask input (maskcyclegan: required; lomit: optional) takes --mask: a scheme of
i2i.data.masks (center:0.5, rects:..., attention:map.png), drawn on each input with a seed made
from its file name, so a re-run draws the same masks; or one grey mask image (pixel / 255)
stretched to each input's size. With --masks, a model without a mask output writes the mask it
was given.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..atomic import write_bytes
from ..data.masks import MaskSampler, parse_mask_spec
from ..engines import EngineSpec
from ..models.spec import InputError, TensorSpec
from . import images
from .batcher import BatcherError
from .gallery import NAME as GALLERY
from .gallery import Row, write_gallery
from .kinds import mask_input
from .pictures import Scheme
from .resolution import Resolution
from .translator import Request, Result, Translator

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".mpo"}
STAMP = "i2i"                       # the PNG text key that records how an output was made


@dataclass
class JobReport:
    translated: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)          # outputs already there
    failed: list[tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class FolderOptions:
    masks: bool = False                         # also write NAME.mask.png
    recursive: bool = False                     # sub-folders too, mirrored in the output
    pictures: dict[str, Path] = field(default_factory=dict)   # other image inputs, by name
    mask: str | None = None                     # a scheme or one grey mask image
    knobs: dict[str, float] = field(default_factory=dict)
    resolution: Resolution = field(default_factory=Resolution)
    max_batch: int = 8
    max_delay_ms: float = 5.0
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    progress: bool = True
    html: bool = True                           # write index.html over the outputs
    about: str = ""                             # the checkpoint or export given, for index.html


def output_names(inputs: list[Path], root: Path, masks: bool = False) -> dict[Path, Path]:
    """Input -> output path stem relative to the output folder (its sub-folder kept), such that
    no two inputs write one file (STEM.png, and STEM.mask.png with `masks`), compared without
    case for case-insensitive disks, nor a file where a mirrored sub-folder goes. The stem is the
    name without its extension; the full file name where two inputs of one folder share a stem;
    where that is still taken, the full name with ~2, ~3, ... Inputs are named in sorted order,
    so the names are the same on every run over the same files."""
    rel = {p: p.relative_to(root) for p in inputs}
    stems: dict[str, int] = {}
    for r in rel.values():
        key = _key(r.with_suffix(""))
        stems[key] = stems.get(key, 0) + 1
    taken = {_key(parent) for r in rel.values() for parent in r.parents} - {"."}
    names = {}
    for p in sorted(inputs):
        r = rel[p]
        simple = r.with_suffix("") if stems[_key(r.with_suffix(""))] == 1 else r
        numbered = (r.with_name(f"{r.name}~{n}") for n in itertools.count(2))
        for stem in itertools.chain([simple, r], numbered):
            made = {_key(stem.with_name(stem.name + end)) for end in _ends(masks)}
            if not made & taken:
                taken |= made
                names[p] = stem
                break
    return names


def _ends(masks: bool) -> tuple[str, ...]:
    return (".png", ".mask.png") if masks else (".png",)


def _key(path: Path) -> str:
    return path.as_posix().casefold()


def _check_folders(input_dir: Path, output_dir: Path, recursive: bool) -> None:
    """Outputs written where the walk reads inputs would be translated again as inputs."""
    inside, out = input_dir.resolve(), output_dir.resolve()
    if out == inside:
        raise ValueError(f"the output folder {output_dir} is the input folder: the translations "
                         "would be read back as inputs; choose another output folder")
    if recursive and out.is_relative_to(inside):
        raise ValueError(f"the output folder {output_dir} is inside the input folder "
                         f"{input_dir}, which --recursive reads: the translations would be read "
                         "back as inputs; choose another output folder outside it")


def translate_folder(engine, input_dir: Path, output_dir: Path,
                     options: FolderOptions | None = None) -> JobReport:
    options = options or FolderOptions()
    files, names = list_inputs(engine.spec, Path(input_dir), Path(output_dir), options)
    report = translate_files(engine, files, Path(output_dir), options, names)
    finish(engine, Path(input_dir), Path(output_dir), options, names, report)
    return report


def list_inputs(spec: EngineSpec, input_dir: Path, output_dir: Path, options: FolderOptions
                ) -> tuple[list[Path], dict[Path, Path]]:
    """(the input files, sorted; input -> output stem) of a folder job, after every check of
    the folders and of what the options give the model; the output folder is made."""
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    _check_folders(input_dir, output_dir, options.recursive)
    _shared_pictures(spec, options.pictures, options.max_pixels)
    _masking(spec, options.mask, options.max_pixels)
    walk = input_dir.rglob("*") if options.recursive else input_dir.iterdir()
    files = sorted(p for p in walk if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(input_dir).parts))
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"could not create the output folder {output_dir} ({err.strerror or err}); "
                      "choose another output folder") from err
    return files, output_names(files, input_dir, options.masks)


def translate_files(engine, files: list[Path], output_dir: Path, options: FolderOptions,
                    names: dict[Path, Path]) -> JobReport:
    """Translate `files` (some or all of a job's, `names` their output stems) through `engine`:
    each skipped when done, else decoded, translated, encoded and written atomically. The
    local command runs it once over every file; a Ray worker once per block of files."""
    shared = _shared_pictures(engine.spec, options.pictures, options.max_pixels)
    fixed, scheme = _masking(engine.spec, options.mask, options.max_pixels)
    job = _Job(Translator(engine, options.max_batch, options.max_delay_ms, options.resolution),
               output_dir, options, shared, fixed, scheme, names)
    return asyncio.run(job.run(files))


def finish(engine, input_dir: Path, output_dir: Path, options: FolderOptions,
           names: dict[Path, Path], report: JobReport) -> None:
    """index.html over a finished job (unless options.html is off)."""
    if options.html:
        _gallery(engine, input_dir, output_dir, options, names, report)


def _outputs(output_dir: Path, stem: Path) -> tuple[Path, Path]:
    """The translation and mask files of an input whose output stem is `stem`."""
    stem = output_dir / stem
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".mask.png")


def _gallery(engine, input_dir: Path, output_dir: Path, options: FolderOptions,
             names: dict[Path, Path], report: JobReport) -> None:
    """index.html over the inputs done (now or before) and those that failed; a failed write is
    reported like a failed input, the translations stay."""
    spec = engine.spec
    rows = []
    for path in sorted({*report.translated, *report.skipped}):
        out, mask_out = _outputs(output_dir, names[path])
        rows.append(Row(path, out, mask_out if options.masks else None))
    working = options.resolution.working
    header = {"model": spec.model, "direction": spec.direction or "not recorded",
              "checkpoint or export": options.about or "(not given)",
              "checkpoint sha256": spec.source,
              "engine": f"{engine.name}, {spec.precision} on {spec.device}" +
                        (f" ({spec.choice})" if spec.choice else ""),
              "resolution": options.resolution.policy + (f", {working} px" if working else "")}
    if options.mask:
        header["mask"] = options.mask
    header.update({name: str(path) for name, path in options.pictures.items()})
    header.update({name: f"{value:g}" for name, value in options.knobs.items()})
    try:
        write_gallery(output_dir, input_dir, header, rows, report.failed, options.masks)
    except OSError as err:
        report.failed.append((output_dir / GALLERY, f"could not write it ({err.strerror or err})"))


def _masking(spec: EngineSpec, mask: str | None, max_pixels: int
             ) -> tuple[dict[str, Image.Image], tuple[TensorSpec, MaskSampler, str] | None]:
    """What --mask gives: one grey mask picture for every input, or a scheme drawn for each;
    ({}, None) without --mask, where the model can do without one."""
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
        return {target.name: images.decode(path.read_bytes(), max_pixels, f"mask {path}",
                                           mode="L")}, None
    try:
        return {}, (target, parse_mask_spec(mask), mask)
    except ValueError as err:
        raise ValueError(f"--mask {mask!r} is neither a mask image file nor a mask scheme: "
                         f"{err}") from err


def _shared_pictures(spec: EngineSpec, pictures: dict[str, Path], max_pixels: int
                     ) -> dict[str, Image.Image]:
    """One picture per image input of the model besides the translated one (`pictures` gives
    their files by input name), used with every input."""
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
        shared[name] = images.decode(path.read_bytes(), max_pixels, f"{name} {path}")
    return shared


def _seed(path: Path) -> int:
    """A mask scheme's seed for one input: from its file name, the same on every run."""
    return zlib.crc32(path.name.encode())


@dataclass
class _Job:
    translator: Translator
    output_dir: Path
    options: FolderOptions
    shared: dict[str, Image.Image]
    fixed_masks: dict[str, Image.Image]
    scheme: tuple[TensorSpec, MaskSampler, str] | None
    names: dict[Path, Path]
    report: JobReport = field(default_factory=JobReport)

    def stamp(self, digest: str) -> dict:
        """How this run makes the output of the input whose bytes have sha256 `digest`: model,
        weights, policy, inputs given (the written record adds the input's size)."""
        spec = self.translator.spec
        return {"model": spec.model, "source": spec.source, "precision": spec.precision,
                "policy": self.options.resolution.policy,
                "working": self.options.resolution.working, "mask": self.options.mask,
                "knobs": self.options.knobs, "input": digest,
                "pictures": {k: str(v) for k, v in self.options.pictures.items()}}

    def done(self, path: Path, outputs: list[Path]) -> bool:
        """Whether every output is there, decodes completely at the input's size and records
        this run's way of making it from these input bytes; anything else is redone."""
        if not all(out.is_file() for out in outputs):
            return False
        try:
            with open(path, "rb") as f:
                want = self.stamp(hashlib.file_digest(f, "sha256").hexdigest())
        except OSError:
            return False                                    # translate() reports it
        for out in outputs:
            try:
                with Image.open(out) as made:
                    made.load()                             # a truncated or corrupt file fails
                    record = json.loads(made.text.get(STAMP, "null"))
                    size = record.pop("size")
                    if record != want or list(made.size) != size:
                        return False
            except Exception:                   # PIL raises OSError, SyntaxError, ValueError...
                return False
        return True

    async def run(self, files: list[Path]) -> JobReport:
        batcher = self.translator.batcher(queue=4 * self.options.max_batch + 64)
        await batcher.start()
        limit = asyncio.Semaphore(2 * self.options.max_batch)
        self.bar = tqdm(total=len(files), desc="translating", disable=not self.options.progress,
                        unit="img")
        try:
            await asyncio.gather(*(self.one(batcher.submit, p, limit) for p in files))
        finally:
            self.bar.close()
            await batcher.stop(drain=True)
        return self.report

    async def one(self, submit, path: Path, limit: asyncio.Semaphore) -> None:
        out, mask_out = _outputs(self.output_dir, self.names[path])
        if self.done(path, [out, mask_out] if self.options.masks else [out]):
            self.report.skipped.append(path)
            self.bar.update()
            return
        async with limit:
            try:
                result, picture, digest = await self.translate(submit, path)
                if picture.note:
                    tqdm.write(f"{path}: {picture.note}")
                self.write(digest, result, picture, out, mask_out)
                self.report.translated.append(path)
            except (InputError, BatcherError, OSError) as err:
                self.report.failed.append((path, str(err)))
                tqdm.write(f"skipped {path}: {err}")
            finally:
                self.bar.update()

    async def translate(self, submit, path: Path) -> tuple[Result, images.Picture, str]:
        """The translation of `path`, its decoded picture and the sha256 of the bytes read."""
        if path.suffix.lower() not in EXTENSIONS:
            raise InputError(f"not an image file ({path.suffix or 'no extension'})")
        data = path.read_bytes()
        given = images.decode_picture(data, self.options.max_pixels, path.name)
        picture = given.image
        primary = self.translator.spec.default.image.name
        masks = {k: m.resize(picture.size, Image.BILINEAR) for k, m in self.fixed_masks.items()}
        scheme = None
        if self.scheme is not None:
            target, sampler, text = self.scheme
            scheme = Scheme(target, sampler, _seed(path), f"--mask {text}")
        request = Request({primary: picture, **self.shared}, masks, scheme, self.options.knobs)
        result = await self.translator.one(submit, request)
        return result, given, hashlib.sha256(data).hexdigest()

    def write(self, digest: str, result: Result, picture: images.Picture, out: Path,
              mask_out: Path) -> None:
        """The translation (with the input's alpha) and, with --masks, the mask; each written
        whole or not at all (OSError with what to do when the disk is full)."""
        size = picture.image.size
        text = {STAMP: json.dumps({**self.stamp(digest), "size": list(size)}, sort_keys=True)}
        composite = result.signature.composite
        name = composite.output if composite else result.signature.outputs[0].name
        _write(out, images.to_png(result.outputs[name][0], size, picture.alpha, text))
        shown = _mask_shown(result)
        if self.options.masks and shown is not None:
            t, value = shown
            _write(mask_out, images.output_png(value[0], t, size, text=text))


def _write(path: Path, data: bytes) -> None:
    try:
        write_bytes(path, data)
    except OSError as err:
        raise OSError(f"could not write {path} ({err.strerror or err}); make room on "
                      "the disk or choose a writable output folder, then run the same command "
                      "again: the pictures already done are skipped") from err


def _mask_shown(result: Result) -> tuple[TensorSpec, object] | None:
    """What --masks writes: the signature's first mask output (mask or signed mask), else its
    mask input; None where there is neither."""
    for t in result.signature.outputs:
        if t.kind in ("mask", "signed_mask"):
            return t, result.outputs[t.name]
    for t in result.signature.of_kind("mask"):
        return t, result.inputs[t.name]
    return None
