"""i2i-export: a thin command line over `i2i.export.build.build`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models import MODELS, CheckpointError, UnknownModelError
from .build import (
    DEFAULT_FORMATS,
    PRECISIONS,
    ExportOptions,
    ParityError,
    build,
    find_checkpoint,
)
from .calibration import DEFAULT_COUNT, CalibrationError

EXAMPLE = """examples (after make demo):
  i2i-export --model additive --fp16
  i2i-export --model additive --formats onnx,openvino --precision fp32,bf16,int8"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2i-export", epilog=EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=(
        "Export a checkpoint to ONNX (fp32/fp16/int8), OpenVINO (fp32/bf16/int8), TensorRT "
        "(fp16/int8), AOTInductor and a Triton Inference Server repository, each checked for "
        "parity against eager PyTorch."))
    p.add_argument("--checkpoint", type=Path, help="default: the newest checkpoint of --model "
                                                   "under --runs")
    p.add_argument("--model", help=f"one of {', '.join(MODELS)}; must match the checkpoint "
                                   "(lomit also gets its masked variant, model.masked.onnx)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where to look for "
                                                                  "checkpoints (default runs/)")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (and "
                                                       "model.masked.fp16.onnx for lomit)")
    p.add_argument("--fp16-io", action="store_true", help="fp16 model takes and returns fp16")
    p.add_argument("--precision", default="fp32",
                   help=f"comma list of {', '.join(PRECISIONS)}: the precisions to write, each "
                        "gated by its own threshold (fp32 is always written; bf16 runs on "
                        "openvino; int8 is calibrated on --calibration)")
    p.add_argument("--calibration", metavar="DIR_OR_SYNTHETIC",
                   help="int8 calibration images: a folder of pictures of the domain the model "
                        "translates from, or synthetic:TASK (default: the test split of the "
                        "checkpoint's training data)")
    p.add_argument("--calibration-count", type=int, default=DEFAULT_COUNT,
                   help=f"int8 calibration images to use (default {DEFAULT_COUNT})")
    p.add_argument("--formats", default=None,
                   help="comma list of onnx, openvino, trt, aoti, triton (default "
                        "onnx,aoti,triton, plus trt when TensorRT and a GPU are present)")
    p.add_argument("--batch", default="1:8:32", help="MIN:OPT:MAX batch sizes")
    p.add_argument("--size", default=None, help="H or HxW (default: the training size)")
    p.add_argument("--static-size", action="store_true",
                   help="fix H and W in the graphs (default: dynamic where allowed)")
    p.add_argument("--direction", choices=["AtoB", "BtoA"], default=None,
                   help="which generator of a run that trains both ways (a cycle run) to "
                        "export: BtoA takes the B -> A checkpoint beside the run's A -> B one "
                        "(default: the checkpoint given, which for a run is A -> B); a one-way "
                        "run's checkpoint says why it has none")
    p.add_argument("--out", type=Path, help="output folder (default exports/<model>, "
                                            "exports/<model>_BtoA for --direction BtoA)")
    p.add_argument("--allow-parity-failure", action="store_true",
                   help="keep artifacts that miss the parity thresholds (recorded in the "
                        "manifest) and exit 0")
    return p


def parse_batch(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--batch {text!r} must be MIN:OPT:MAX, e.g. 1:8:32")
    return tuple(int(p) for p in parts)


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise ValueError(f"--size {text!r} must be H or HxW, e.g. 256 or 256x384")
    return (int(parts[0]), int(parts[-1]))


def default_formats() -> tuple[str, ...]:
    from .tensorrt import availability
    return DEFAULT_FORMATS + (("trt",) if availability() is None else ())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        formats = tuple(f.strip() for f in args.formats.split(",")) if args.formats else \
            default_formats()
        if formats == ("trt",):
            from .tensorrt import availability
            reason = availability()
            if reason is not None:
                raise ValueError(f"TensorRT export asked for, but {reason}")
        if args.checkpoint is None:
            if not args.model:
                raise ValueError("give --checkpoint PATH or --model NAME")
            args.checkpoint = find_checkpoint(args.runs, args.model)
            print(f"using the newest {args.model} checkpoint: {args.checkpoint}")
        precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())
        options = ExportOptions(out=args.out, formats=formats, fp16=args.fp16,
                                precisions=precisions, calibration=args.calibration,
                                calibration_count=args.calibration_count,
                                fp16_io=args.fp16_io, batch=parse_batch(args.batch),
                                size=parse_size(args.size), dynamic_size=not args.static_size,
                                allow_parity_failure=args.allow_parity_failure,
                                model=args.model, direction=args.direction)
        out = build(args.checkpoint, options)
    except ParityError as err:
        print(f"i2i-export: {err}", file=sys.stderr)
        return 1
    except (CheckpointError, UnknownModelError, CalibrationError, ValueError,
            FileNotFoundError) as err:
        print(f"i2i-export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
