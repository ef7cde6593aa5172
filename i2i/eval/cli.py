"""i2i-eval: FID, KID, precision/recall and paired metrics of a model's translations or of a
folder of pictures against target pictures; a table on the terminal and a JSON file.

A thin command line over i2i.eval.compare.compare (README, "Evaluating: i2i-eval").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from ..engines.base import PRECISIONS
from ..models import CheckpointError
from ..models.spec import InputError
from .compare import CompareOptions, compare, table, write_report
from .distribution import KID_SUBSET_SIZE, KID_SUBSETS, K
from .features import add_feature_arguments, open_features
from .paired import TOLERANCE
from .pictures import A, B, PictureError, PictureFiles, Translated
from .synthetic import is_synthetic, write_test_split

EXAMPLES = """examples:
  i2i-eval generated/ testB/ --inception pt_inception-2015-12-05-6726825d.pth
  i2i-eval testA/ testB/ --model exports/cyclegan --inception pt_inception-2015-12-05-6726825d.pth
  i2i-eval horse2zebra/ --model exports/cyclegan --inception ...   (its testA against testB)
  i2i-eval maps/test/ --aligned --model runs/maps/checkpoints/step_200000.safetensors \\
      --inception pt_inception-2015-12-05-6726825d.pth
  i2i-eval testA/ testB/ --model exports/additive --features tiny      (not comparable with
                                                                       published numbers)
  i2i-eval synthetic:circle2square --model exports/additive --features tiny   (the synthetic
                                              data's held-out test split, at the model's size)"""

USAGE = ("give two folders (GENERATED TARGET: pictures already made and the pictures they "
         "should look like; or SOURCE TARGET with --model: SOURCE's pictures are translated), "
         "one dataset root holding testA and testB (or synthetic:TASK, the synthetic data's "
         "held-out pictures) with --model, or one folder of A|B pictures with --aligned "
         "--model")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2i-eval", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Measure translations against target pictures: FID, "
                                            "KID, precision and recall (k-NN manifolds) and, "
                                            "for paired pictures, pixel accuracy, PSNR and "
                                            "SSIM.")
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help=USAGE)
    p.add_argument("--model", type=Path,
                   help="a checkpoint or an i2i-export folder: translate the SOURCE pictures "
                        "(or the A halves with --aligned) and measure the translations")
    p.add_argument("--aligned", action="store_true",
                   help="the one folder holds A|B pictures side by side (pix2pix): each A "
                        "half is translated and compared with its B half (B to A for a model "
                        "trained --direction BtoA)")
    p.add_argument("--unpaired", dest="pairs", action="store_false",
                   help="the two folders are not pairs even where file names match (numbered "
                        "test sets): no pixel accuracy, PSNR or SSIM")
    add_feature_arguments(p)
    p.add_argument("--json", type=Path, default=Path("eval.json"),
                   help="where the report goes (default eval.json)")
    p.add_argument("--kid-subsets", type=int, default=KID_SUBSETS)
    p.add_argument("--kid-subset-size", type=int, default=KID_SUBSET_SIZE,
                   help="pictures per KID subset (at most the smaller set's count)")
    p.add_argument("--k", type=int, default=K, help="the neighbour that sets a manifold "
                                                    "ball's radius (precision/recall)")
    p.add_argument("--tolerance", type=int, default=TOLERANCE,
                   help="pixel accuracy: a pixel is right when every channel is within this "
                        "many 8-bit levels of the target (default 16)")
    p.add_argument("--batch-size", type=int, default=32, help="pictures per feature batch")
    p.add_argument("--engine", help="the engine translating with --model (as i2i-translate)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (model and features)")
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS))
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--resolution", default="auto",
                   choices=["auto", "native", "tile", "mask", "resize"])
    p.add_argument("--count", type=int, default=256,
                   help="synthetic:TASK: held-out pictures of each domain (default 256)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(test_split=False)
    return p


def _test_split(args) -> bool:
    """Whether the one folder given with --model is a dataset root in the CycleGAN layout; its
    testA and testB then stand for SOURCE and TARGET (the other way for a BtoA model)."""
    root = args.folders[0]
    return (len(args.folders) == 1 and not args.aligned and args.model is not None
            and (root / "testA").is_dir() and (root / "testB").is_dir())


def _synthetic(args) -> bool:
    """Whether the one folder given is synthetic:TASK (its test split is written first)."""
    return len(args.folders) == 1 and is_synthetic(str(args.folders[0]))


def _check(args) -> None:
    if _synthetic(args) and (args.model is None or args.aligned):
        raise PictureError(f"{args.folders[0]} gives pictures of two domains: pass the --model "
                           "that translates one into the other (and no --aligned)")
    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    if _test_split(args):
        args.folders = [args.folders[0] / "testA", args.folders[0] / "testB"]
        args.test_split = True
    if len(args.folders) > 2:
        raise PictureError(f"{len(args.folders)} folders given; {USAGE}")
    if args.aligned and (len(args.folders) != 1 or args.model is None):
        raise PictureError("--aligned takes one folder of A|B pictures and a --model to "
                           "translate the A halves with")
    if len(args.folders) == 1 and not args.aligned and not _synthetic(args):
        raise PictureError(f"one folder given; {USAGE}")
    for name in ("kid_subsets", "k", "batch_size", "max_batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got "
                             f"{getattr(args, name)}")
    if args.kid_subset_size < 2:
        raise ValueError(f"--kid-subset-size must be at least 2, got {args.kid_subset_size}")
    if not 0 <= args.tolerance <= 255:
        raise ValueError(f"--tolerance is in 8-bit levels, 0 to 255, got {args.tolerance}")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _open(args):
    from ..api import open as open_model
    return open_model(args.model, engine=args.engine, device=args.device,
                      precision=args.precision, resolution=args.resolution,
                      max_batch=args.max_batch)


def _sets(args, model=None) -> tuple[PictureFiles | Translated, PictureFiles, dict]:
    """(the generated pictures, the target pictures, what the report says they are)."""
    if args.model is None:
        generated, target = (PictureFiles.of(f) for f in args.folders)
        return generated, target, {"generated": str(args.folders[0]),
                                   "target": str(args.folders[1])}
    model = model or _open(args)
    about = {"model": str(args.model), "engine": model.engine.name,
             "precision": model.spec.precision}
    if args.aligned:
        source, truth = (B, A) if model.spec.direction == "BtoA" else (A, B)
        folder = args.folders[0]
        about.update(aligned=str(folder), source_half="AB"[source], target_half="AB"[truth])
        return (Translated(model, PictureFiles.of(folder, source), 4 * args.max_batch),
                PictureFiles.of(folder, truth), about)
    source, target = args.folders
    if args.test_split and model.spec.direction == "BtoA":
        source, target = target, source
    about.update(source=str(source), target=str(target))
    return (Translated(model, PictureFiles.of(source), 4 * args.max_batch),
            PictureFiles.of(target), about)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="i2i-eval-") as tmp:
        return _main(args, Path(tmp))


def _main(args, tmp: Path) -> int:
    try:
        _check(args)
        net, model, synthetic = None, None, None
        if _synthetic(args):                         # the features' refusal before any writing
            net = open_features(args.features or "inception", args.inception)
            model, synthetic = _open(args), str(args.folders[0])
            root = write_test_split(synthetic, model.spec.default_size, args.count, tmp)
            args.folders = [root / "testA", root / "testB"]
            args.test_split = True
        for folder in args.folders:                  # the folders before any model is opened
            PictureFiles.of(folder)
        net = net or open_features(args.features or "inception", args.inception)
        generated, target, about = _sets(args, model)
        if synthetic:
            about.update(source=f"{synthetic} test split", target=f"{synthetic} test split")
        options = CompareOptions(kid_subsets=args.kid_subsets,
                                 kid_subset_size=args.kid_subset_size, k=args.k,
                                 tolerance=args.tolerance, batch_size=args.batch_size,
                                 pairs=args.pairs, progress=args.progress)
        report = compare(generated, target, net.to(_device(args.device)), options)
    except (ValueError, FileNotFoundError, RuntimeError, CheckpointError, InputError) as err:
        print(f"i2i-eval: error: {err}", file=sys.stderr)
        return 2
    report["inputs"] = about
    print(table(report))
    try:
        write_report(report, args.json)
    except OSError as err:
        print(f"i2i-eval: error: could not write {args.json} ({err.strerror or err}); choose "
              "another --json path", file=sys.stderr)
        return 1
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
