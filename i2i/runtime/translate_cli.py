"""i2i-translate: translate a folder of pictures (or one picture) with a checkpoint or an export.

A thin command line over i2i.runtime.folder.translate_folder; `i2i-serve --input-dir` runs the
same code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engines.base import PRECISIONS

EXAMPLES = """examples:
  i2i-translate photos/ out/ --model exports/additive --masks
  i2i-translate photos/ out/ --model exports/additive --resolution mask --knob strength=0.5
  i2i-translate photos/ out/ --model runs/x/checkpoints/step_001000.safetensors --engine eager
  i2i-translate photos/ out/ --model exports/lomit --exemplar ref.png
  i2i-translate photos/ out/ --model exports/maskcyclegan --mask center:0.5 --recursive
  i2i-translate /shared/photos /shared/out --model /shared/exports/additive --ray HEAD:6379"""


def add_folder_arguments(p: argparse.ArgumentParser) -> None:
    """The options of folder translation, shared by i2i-translate and i2i-serve --input-dir."""
    p.add_argument("--masks", action="store_true", help="also write NAME.mask.png")
    p.add_argument("--recursive", action="store_true",
                   help="translate sub-folders too, mirrored in the output folder")
    p.add_argument("--exemplar", type=Path,
                   help="the exemplar every input is translated towards (lomit); short for "
                        "--input exemplar=PATH")
    p.add_argument("--input", action="append", metavar="NAME=PATH", dest="pictures",
                   help="a picture for the model's image input NAME besides the translated "
                        "one, used for every input (repeatable)")
    p.add_argument("--mask", metavar="SPEC_OR_FILE",
                   help="a mask scheme drawn on each input, seeded by its file name "
                        "(center:0.5, rects, rects:min_area=0.2, attention:map.png), or one "
                        "grey mask image for every input, 255 = translate (models with a mask "
                        "input: maskcyclegan needs one, lomit may take one)")
    p.add_argument("--knob", action="append", metavar="NAME=VALUE",
                   help="a number input of the model, e.g. strength=0.5 (additive)")
    p.add_argument("--resolution", default="auto",
                   choices=["auto", "native", "tile", "mask", "resize"],
                   help="auto: native where the engine takes any size and the picture has at "
                        "most 2048x2048 pixels, else tile")
    p.add_argument("--no-html", dest="html", action="store_false",
                   help="write no index.html (the page showing each input beside its outputs)")
    p.add_argument("--working", type=int, default=None,
                   help="tile side (tile) or long side (mask) in pixels; default: the engine's "
                        "size, else 512 for tiles and the training size for masks")


def folder_options(args, max_batch: int):
    from .folder import FolderOptions
    from .resolution import Resolution
    return FolderOptions(masks=args.masks, recursive=args.recursive, pictures=_pairs(args),
                         mask=args.mask, knobs=_knobs(args), max_batch=max_batch,
                         resolution=Resolution(args.resolution, args.working),
                         max_delay_ms=args.max_delay_ms, max_pixels=args.max_pixels,
                         progress=args.progress, html=args.html, about=_given(args))


def _given(args) -> str:
    """The checkpoint or export the command named (i2i-translate --model, i2i-serve --export or
    --checkpoint), shown in index.html."""
    given = vars(args)
    named = [given.get(k) for k in ("model", "export", "checkpoint")]
    return " + ".join(str(p) for p in named if p)


def _pairs(args) -> dict[str, Path]:
    pairs = _split(args.pictures, "--input", "exemplar=ref.png")
    pictures = {name: Path(path) for name, path in pairs}
    if args.exemplar:
        pictures["exemplar"] = args.exemplar
    return pictures


def _knobs(args) -> dict[str, float]:
    knobs = {}
    for name, text in _split(args.knob, "--knob", "strength=0.5"):
        try:
            knobs[name] = float(text)
        except ValueError as err:
            raise ValueError(f"--knob {name}={text}: the value must be a number") from err
    return knobs


def _split(items: list[str] | None, flag: str, example: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} {item!r} must be NAME=VALUE, e.g. {example}")
        pairs.append((name, value))
    return pairs


def run_folder(engine, input_dir: Path, output_dir: Path, options, prog: str = "i2i-translate",
               job=None) -> int:
    """Translate (`job()` where given: the Ray job), print the report; 0 when every picture was
    translated or already done, 1 when any failed, 2 for a bad setup (a missing or unwritable
    folder, bad options)."""
    from .folder import translate_folder
    try:
        report = job() if job else translate_folder(engine, input_dir, output_dir, options)
    except (OSError, ValueError, ImportError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"translated {len(report.translated)}, already done {len(report.skipped)}, "
          f"failed {len(report.failed)}")
    for path, reason in report.failed:
        print(f"  failed {path}: {reason}")
    return 1 if report.failed else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2i-translate", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Translate every picture of a folder, each at its "
                                            "own size.")
    p.add_argument("input", type=Path, help="a folder of pictures")
    p.add_argument("output", type=Path, help="where the translations go")
    p.add_argument("--model", type=Path, required=True,
                   help="an i2i-export folder (with manifest.json) or a checkpoint")
    p.add_argument("--engine", help="eager, fused, onnxruntime, openvino, tensorrt, aoti, or "
                                    "auto: the fastest artifact of an export that passed its "
                                    "parity gate and opens here (default: onnxruntime for an "
                                    "export, eager for a checkpoint)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS))
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument("--max-pixels", type=int, default=4096 * 4096,
                   help="pictures with more pixels are refused before decoding")
    add_folder_arguments(p)
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", default=None,
                   help="run as a Ray Data job: an actor pool with one engine per worker (a GPU "
                        "each where the cluster has them); ADDRESS of a running cluster "
                        "(HOST:6379, auto), none for a Ray started here. Needs i2i[ray]")
    p.add_argument("--workers", type=int, default=None,
                   help="--ray: actors in the pool (default: the cluster's GPUs, else CPUs)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..engines import open_engine
    from ..models import CheckpointError
    if args.ray is not None:
        return _ray(args)
    if args.workers is not None:
        print("i2i-translate: error: --workers sizes the Ray job's actor pool; add --ray",
              file=sys.stderr)
        return 2
    try:
        model = args.model
        export = model.is_dir()
        engine = open_engine(args.engine or ("onnxruntime" if export else "eager"),
                             export_dir=model if export else None,
                             checkpoint=None if export else model, device=args.device,
                             precision=args.precision, max_batch_size=args.max_batch)
        options = folder_options(args, args.max_batch)
    except (ValueError, FileNotFoundError, RuntimeError, CheckpointError) as err:
        print(f"i2i-translate: error: {err}", file=sys.stderr)
        return 2
    if engine.spec.choice:
        print(engine.spec.choice)
    return run_folder(engine, args.input, args.output, options)


def _ray(args) -> int:
    """The folder job on Ray (i2i/runtime/ray_job.py); the same report and exit codes."""
    from ..models import CheckpointError
    from .ray_job import EngineArgs, translate_with_ray
    export = args.model.is_dir()
    engine = EngineArgs(args.engine or ("onnxruntime" if export else "eager"), args.model,
                        args.device, args.precision, args.max_batch)
    try:
        options = folder_options(args, args.max_batch)
    except ValueError as err:
        print(f"i2i-translate: error: {err}", file=sys.stderr)
        return 2
    job = lambda: translate_with_ray(engine, args.input, args.output, options,
                                     address=args.ray or None, workers=args.workers)
    try:
        return run_folder(None, args.input, args.output, options, job=job)
    except (FileNotFoundError, RuntimeError, CheckpointError) as err:
        print(f"i2i-translate: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
