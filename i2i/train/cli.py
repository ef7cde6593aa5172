"""i2i-train: a thin command line over `i2i.train.loop.train`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from ..data import DataError
from ..data.preprocess import PREPROCESS
from ..eval.features import add_feature_arguments
from ..models import CheckpointError, UnknownModelError, get_entry
from .evaluation import check_eval
from .init import INIT_TYPES, check_init
from .loop import TrainOptions, train
from .losses import GAN_MODES
from .registry import (
    check_options,
    default_text,
    flag,
    models_with,
    switch_help,
    takers,
    trained_models,
)

SWITCH = "switch:"          # the argparse dest of a recipe switch: SWITCH + its name
EXAMPLE = ("example: i2i-train --model additive --data synthetic:circle2square --size 64 "
           "--steps 2000 --batch-size 16 --lambda-r 1.0 --seed 0 --out runs/circles")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2i-train", epilog=EXAMPLE,
                                description="Train an i2i translator and write checkpoints.")
    d = TrainOptions(out="")
    p.add_argument("--model", default=d.model, help=", ".join(trained_models()))
    p.add_argument("--data", default=d.data,
                   help="synthetic:circle2square | synthetic:square2circle | a folder in the "
                        "CycleGAN layout (trainA/trainB), or root/train with A|B pairs for "
                        f"the paired recipes ({models_with('pairs')}); the labelled ones "
                        f"({models_with('labels')}) also read synthetic:attributes"
                        "[:object_color|background] (labelled two-attribute scenes)")
    p.add_argument("--supervised", action="store_true",
                   help=f"{models_with('supervised')} only: the model's supervised recipe, one "
                        "generator trained on paired targets")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--size", type=int, default=d.size, help="training crop size in pixels")
    p.add_argument("--steps", type=int, default=d.steps, help="total optimisation steps")
    p.add_argument("--stop-after", type=int, default=None,
                   help="end this invocation at that step; continue later with --resume")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"default {default_text('batch_size')} (each recipe's reference)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--lambda-r", type=float, default=None,
                   help=f"{takers('lambda_r')}: weight of the L1 mask penalty (default "
                        f"{default_text('lambda_r')})")
    p.add_argument("--ngf", type=int, default=d.ngf, help="generator width")
    p.add_argument("--n-blocks", type=int, default=d.n_blocks,
                   help="residual blocks of the generator (of each of its encoders and "
                        f"decoders where it has them; default {default_text('n_blocks')})")
    p.add_argument("--depth", type=int, default=None,
                   help="U-Net depth (8 = unet_256, 7 = unet_128; default from --size)")
    p.add_argument("--ndf", type=int, default=d.ndf, help="discriminator width")
    p.add_argument("--disc", default=d.disc, choices=["patch", "dcgan"],
                   help="the shared discriminator, for the recipes that use it (dcgan needs "
                        "--size 64)")
    p.add_argument("--disc-layers", type=int, default=d.disc_layers,
                   help="discriminator layers (per scale for a multi-scale one; default "
                        f"{default_text('disc_layers')})")
    p.add_argument("--masks", default=None,
                   help=f"{takers('masks')}: mask scheme for training, e.g. rects (default, the "
                        "paper's Algorithm 1), rects:min_area=0.2,max_rects=4,full=0.2, "
                        "center:0.5")
    p.add_argument("--follow", default=None, choices=["paper", "code"],
                   help=f"{takers('follow')}: train as the paper says (paper) or as its "
                        "published reference code does (code); default "
                        f"{default_text('follow')}; docs/REFERENCES.md lists each difference")
    reference = p.add_argument_group(
        "reference options", "the CycleGAN/pix2pix reference's names for them; docs/REFERENCES.md "
        "lists each recipe's defaults")
    reference.add_argument("--init-type", choices=INIT_TYPES, default=None,
                           help=f"{takers('init_type')}: weight initialisation, default "
                                "being PyTorch's (default "
                                f"{default_text('init_type')}); the other recipes have their "
                                "references' own")
    reference.add_argument("--init-gain", type=float, default=None,
                           help="std of normal, gain of xavier/orthogonal (default "
                                f"{default_text('init_gain')})")
    reference.add_argument("--gan-mode", choices=list(GAN_MODES), default=None,
                           help=f"{takers('gan_mode')}: the GAN loss (default "
                                f"{default_text('gan_mode')}); wgangp adds a gradient penalty "
                                "of weight 10")
    reference.add_argument("--lambda-cycle", type=float, default=None,
                           help=f"{takers('lambda_cycle')}: cycle weight (default "
                                f"{default_text('lambda_cycle')})")
    reference.add_argument("--lambda-identity", type=float, default=None,
                           help=f"{takers('lambda_identity')}: identity weight as a fraction "
                                f"of --lambda-cycle (default {default_text('lambda_identity')}; "
                                "0 turns it off)")
    reference.add_argument("--lambda-l1", type=float, default=None,
                           help=f"{takers('lambda_l1')}: weight of the L1 term (default "
                                f"{default_text('lambda_l1')})")
    reference.add_argument("--pool-size", type=int, default=None,
                           help=f"{takers('pool_size')}: generated images kept for the "
                                f"discriminators (default {default_text('pool_size')}; 0: none)")
    reference.add_argument("--preprocess", choices=PREPROCESS, default=d.preprocess,
                           help="folders: what each training image goes through (default "
                                "resize_and_crop)")
    reference.add_argument("--load-size", type=int, default=None,
                           help="folders: the resize before the crop (default 286/256 of --size)")
    reference.add_argument("--no-flip", dest="flip", action="store_false",
                           help="folders: no random horizontal flips")
    reference.add_argument("--direction", choices=["AtoB", "BtoA"], default=d.direction,
                           help="BtoA trains the model from domain B to domain A (for aligned "
                                "data: from the right half to the left)")
    for name, words in switch_help().items():        # the recipes' own on/off flags
        p.add_argument(f"--{flag(name)}", dest=SWITCH + name, action="store_true", help=words)
    p.add_argument("--lr", type=float, default=d.lr, help=f"default {default_text('lr')}")
    p.add_argument("--decay-start", type=float, default=d.decay_start,
                   help="fraction of the steps after which the lr decays linearly to 0")
    p.add_argument("--sample-every", type=int, default=d.sample_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    evaluation = p.add_argument_group(
        "evaluation during training", "FID, KID, precision and recall of held-out source "
        "pictures translated against held-out target pictures, into log.jsonl and "
        "loss_curve.png (README, 'Evaluating')")
    evaluation.add_argument("--eval-every", type=int, default=d.eval_every, metavar="K",
                            help="evaluate every K steps and at the last (default 0: never)")
    add_feature_arguments(evaluation, "--eval-features")
    evaluation.add_argument("--eval-count", type=int, default=d.eval_count, metavar="N",
                            help="held-out pictures of each domain (default 64)")
    p.add_argument("--nproc", type=int, default=1,
                   help="train on N ranks of this machine (torchrun --standalone "
                        "--nproc-per-node N): one GPU each, or CPU processes with gloo; "
                        "--batch-size is each rank's. For several machines run torchrun "
                        "-m i2i.train.cli yourself")
    return p


def launch(nproc: int, argv: list[str]) -> int:
    """Run this command as `nproc` ranks under torchrun (without --nproc); its exit status."""
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "i2i.train.cli", *rest]
    return subprocess.call(command)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = vars(p.parse_args(argv))
    resume, nproc = args.pop("resume"), args.pop("nproc")
    given = {name: args.pop(name) for name in [n for n in args if n.startswith(SWITCH)]}
    args["switches"] = {name[len(SWITCH):]: True for name, on in given.items() if on}
    if nproc < 1:
        print(f"i2i-train: error: --nproc must be at least 1, got {nproc}", file=sys.stderr)
        return 2
    if nproc > 1:
        if "WORLD_SIZE" in os.environ:
            print("i2i-train: error: --nproc launches torchrun, but this process already is "
                  "one of torchrun's ranks; leave out --nproc", file=sys.stderr)
            return 2
        return launch(nproc, sys.argv[1:] if argv is None else list(argv))
    try:
        get_entry(args["model"])
        options = TrainOptions(**args)
        _check(options.resolved())
        final = train(options, resume=resume)
    except (UnknownModelError, DataError, CheckpointError, FileExistsError, ValueError) as err:
        print(f"i2i-train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ni2i-train: interrupted; the newest checkpoint can be continued with --resume",
              file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":         # torchrun's other ranks say nothing
        print(f"checkpoint: {final}")
    return 0


def _check(o: TrainOptions) -> None:
    for name in ("size", "steps", "batch_size", "ngf", "ndf", "sample_every",
                 "checkpoint_every", "log_every"):
        if getattr(o, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, "
                             f"got {getattr(o, name)}")
    entry = o.recipe()
    check_options(entry, o)
    if o.n_blocks < 0:
        raise ValueError(f"--n-blocks must be >= 0, got {o.n_blocks}")
    for name in ("lambda_cycle", "lambda_identity", "lambda_l1", "pool_size"):
        if (getattr(o, name) or 0) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(o, name)}")
    if o.load_size is not None and o.load_size < 1:
        raise ValueError(f"--load-size must be at least 1, got {o.load_size}")
    if o.init_type is not None:
        check_init(o.init_type, o.init_gain)
    if o.direction == "BtoA" and entry.labels:
        raise ValueError(f"--direction BtoA does not apply to {o.model}: it translates either "
                         f"way with an exemplar of the other domain")
    o.preprocessing()                   # a bad --preprocess / --load-size fails here
    check_eval(o)
    multiple = entry.size_multiple(o.recipe_options())
    if o.size % multiple:
        raise ValueError(f"--size {o.size} must be a multiple of {multiple} for {o.model}")


if __name__ == "__main__":
    raise SystemExit(main())
