"""Import generators saved by the reference CycleGAN/pix2pix and Mask CycleGAN code.

Those files (`latest_net_G_A.pth`, `latest_net_G.pth`; mask-cgan's `runs/<run>/netG_A2B.pth`) are
plain state_dicts keyed by nn.Sequential indices (`model.1.weight`, ...). They are read with
`torch.load(weights_only=True)`, which refuses arbitrary pickled objects; the keys are mapped to
i2i's named modules, the architecture is read off the keys and shapes, and the result is written
as an i2i checkpoint.

    i2i-import latest_net_G_A.pth --model cyclegan --out horse2zebra.safetensors
    i2i-import latest_net_G.pth --model pix2pix --no-dropout --eval --out facades.safetensors
    i2i-import netG_A2B.pth --model maskcyclegan --out m.safetensors

What the keys tell (an option given for it must agree, or the import stops and says why): ngf,
blocks or depth; the norm (`--norm`: batch where norm layers hold weights, instance where the
convolutions carry biases instead, none where neither); input and output channels (`--input-nc`,
`--output-nc`: grey <-> colour generators import as cyclegan or pix2pix); a ResNet's dropout (a
dropout layer moves each block's second conv from `conv_block.5` to `conv_block.6`).
What only the caller can say, under the reference's option names:
- `--no-dropout`: a pix2pix U-Net's dropout has no weights; the default is on, as the reference
  trains pix2pix unless `--no_dropout` was given.
- `--eval`: batch norm uses its running statistics at inference, as the reference's test with
  `--eval`; by default each image is normalised with its own statistics, as its test without it.
- `--direction AtoB|BtoA`: which way the generator maps; by default read from the file name
  (G_A and A2B map A to B, G_B and B2A map B to A), else AtoB.

Layouts (a registry entry's `reference` field): resnet, the CycleGAN ResnetGenerator (models
cyclegan, additive); unet, the pix2pix UnetGenerator (model pix2pix); maskcyclegan, mask-cgan's
`Generator(use_mask=True)` (github.com/minfawang/mask-cgan, model/models.py): the ResNet's
Sequential plus two 1x1 convolutions `mask_model` (E_m) and `context_model` (E_c), mapped to
i2i's `mask_encoder` and `context_encoder`. mask-cgan feeds a C-channel mask; i2i repeats its
one-channel mask over C, the same input wherever the C channels are equal.
The checkpoint's meta records how each choice was made (dropout_from, direction_from).
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from . import MODELS, CheckpointError, build, get_entry, load_state, make_config
from .checkpoint import save_checkpoint
from .norms import NORMS

DIRECTIONS = ("AtoB", "BtoA")
REFERENCE_CROP = 256              # the reference's --crop_size default

STALE_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")
SHOWN_KEYS = 6                    # how many of a file's keys an error lists


def resnet_key_map(n_blocks: int, dropout: bool) -> dict[str, str]:
    """Reference module prefix -> i2i module prefix for the ResNet generator."""
    second = 6 if dropout else 5             # each conv's norm follows it at the next index
    steps = {1: "generator.stem", 4: "generator.down.0", 7: "generator.down.1",
             10 + n_blocks: "generator.up.0", 13 + n_blocks: "generator.up.1"}
    mapping = {f"model.{17 + n_blocks}": "generator.head"}
    for index, name in steps.items():
        mapping[f"model.{index}"] = f"{name}.conv"
        mapping[f"model.{index + 1}"] = f"{name}.norm"
    for i in range(n_blocks):
        block = f"model.{10 + i}.conv_block"
        mapping.update({f"{block}.1": f"generator.blocks.{i}.conv1",
                        f"{block}.2": f"generator.blocks.{i}.norm1",
                        f"{block}.{second}": f"generator.blocks.{i}.conv2",
                        f"{block}.{second + 1}": f"generator.blocks.{i}.norm2"})
    return mapping


def maskcyclegan_key_map(n_blocks: int, dropout: bool) -> dict[str, str]:
    """mask-cgan's Generator: the ResNet's keys plus its two 1x1 encoders."""
    return {**resnet_key_map(n_blocks, dropout), "mask_model": "mask_encoder",
            "context_model": "context_encoder"}


def unet_key_map(depth: int) -> dict[str, str]:
    """Reference prefixes of the nested UnetSkipConnectionBlocks -> i2i's flat down/up lists."""
    mapping = {}
    prefix = "model.model."
    for level in range(depth):
        if level == 0:
            mapping[prefix + "0"] = "generator.down.0.0"
            mapping[prefix + "3"] = "generator.up.0.1"
        elif level == depth - 1:                     # innermost: no down norm, no submodule
            mapping[prefix + "1"] = f"generator.down.{level}.0"
            mapping[prefix + "3"] = f"generator.up.{level}.1"
            mapping[prefix + "4"] = f"generator.up.{level}.2"
        else:
            mapping[prefix + "1"] = f"generator.down.{level}.0"
            mapping[prefix + "2"] = f"generator.down.{level}.1"
            mapping[prefix + "5"] = f"generator.up.{level}.1"
            mapping[prefix + "6"] = f"generator.up.{level}.2"
        prefix += ("1" if level == 0 else "3") + ".model."
    return mapping


# ---------------------------------------------------------------------------------------------
# What a file holds, for errors


def guess_layout(state: dict[str, torch.Tensor]) -> str | None:
    """The layout whose signature keys the file has, or None."""
    if "model.model.0.weight" in state:
        return "unet"
    if "model.1.weight" in state:
        return "maskcyclegan" if "mask_model.weight" in state else "resnet"
    return None


def known_layouts() -> str:
    """'resnet (models additive, cyclegan), unet (models pix2pix), ...' from the registry."""
    users = {layout: sorted(n for n, e in MODELS.items() if e.reference == layout)
             for layout in LAYOUTS}
    return ", ".join(f"{layout} (models {', '.join(names)})" for layout, names in users.items())


def describe(state: dict[str, torch.Tensor], model: str) -> str:
    """The file's first keys and shapes, what it looks like, and the layouts there are."""
    keys = sorted(state)
    shown = ", ".join(f"{k} {tuple(state[k].shape)}" for k in keys[:SHOWN_KEYS])
    more = f", ... ({len(keys)} tensors)" if len(keys) > SHOWN_KEYS else ""
    text = f"the file holds {shown or 'no tensors'}{more}."
    guess = guess_layout(state)
    fits = sorted(n for n, e in MODELS.items() if e.reference == guess and n != model)
    if guess is None:
        text += " It has the signature keys of no reference layout."
    elif fits:
        text += (f" It looks like a reference {guess} generator: import it with --model "
                 f"{' or --model '.join(fits)}.")
    return text + f" Reference layouts: {known_layouts()}."


def _not_layout(what: str, key: str, state: dict[str, torch.Tensor], model: str):
    return CheckpointError(f"not a reference {what}: no {key!r} key; {describe(state, model)}")


# ---------------------------------------------------------------------------------------------
# Config from the keys, and what the caller says where the keys cannot tell


@dataclass(frozen=True)
class Asked:
    """What the caller says about a file, under the reference's option names. None: read it off
    the keys where they tell (an explicit value must then agree), else the reference's default.
    """

    dropout: bool | None = None     # False: --no-dropout
    norm: str | None = None         # --norm instance | batch | none
    input_nc: int | None = None     # --input-nc
    output_nc: int | None = None    # --output-nc
    running_stats: bool = False     # --eval: batch norm's running statistics at inference
    direction: str | None = None    # --direction AtoB | BtoA


def norm_from_keys(state: dict[str, torch.Tensor], first_conv: str) -> str:
    """batch where norm layers hold weights (1-D `.weight` tensors: conv weights are 4-D),
    instance where the convolutions carry biases instead, none where neither."""
    if any(k.endswith(".weight") and v.dim() == 1 for k, v in state.items()):
        return "batch"
    return "instance" if f"{first_conv}.bias" in state else "none"


def _agree(what: str, asked, found, how: str) -> None:
    if asked is not None and asked != found:
        raise CheckpointError(f"{what} {asked} was asked for, but the file's keys show "
                              f"{found} ({how}); leave the option out to take it from the file")


def _shared_config(state: dict[str, torch.Tensor], asked: Asked, first_conv: str,
                   output_nc: int) -> dict:
    """norm, channels and their inference settings, common to every layout."""
    norm = norm_from_keys(state, first_conv)
    _agree("--norm", asked.norm, norm,
           "norm weights, conv biases or neither after the first convolution")
    input_nc = state[f"{first_conv}.weight"].shape[1]
    _agree("--input-nc", asked.input_nc, input_nc, "the first convolution's input channels")
    _agree("--output-nc", asked.output_nc, output_nc, "the last convolution's output channels")
    return {"channels": input_nc, "norm": norm,
            "out_channels": None if output_nc == input_nc else output_nc,
            "running_stats": asked.running_stats and norm == "batch"}


def infer_resnet_config(state: dict[str, torch.Tensor], asked: Asked = Asked(),
                        model: str = "cyclegan") -> tuple[dict, str]:
    if "model.1.weight" not in state:
        raise _not_layout("ResNet generator", "model.1.weight", state, model)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    # A dropout layer moves the second conv to index 6 (without one, 6 is its norm: 1-D).
    found = any(k.endswith(".conv_block.6.weight") and v.dim() == 4 for k, v in state.items())
    if asked.dropout is not None and blocks and asked.dropout != found:
        if found:
            raise CheckpointError(
                "the file's residual blocks hold a dropout layer (second conv at "
                "'model.10.conv_block.6'): it was trained with dropout, so import it without "
                "--no-dropout (dropout=None or True)")
        raise CheckpointError(
            "the file's residual blocks hold no dropout layer (second conv at "
            "'model.10.conv_block.5'): it was trained with --no_dropout, so import it without "
            "a dropout choice (dropout=None or False)")
    head = f"model.{17 + len(blocks)}.weight"
    if head not in state:
        raise _not_layout("ResNet generator", head, state, model)
    return {"ngf": state["model.1.weight"].shape[0], "n_blocks": len(blocks), "dropout": found,
            **_shared_config(state, asked, "model.1", state[head].shape[0])}, "keys"


def infer_unet_config(state: dict[str, torch.Tensor], asked: Asked = Asked(),
                      model: str = "pix2pix") -> tuple[dict, str]:
    if "model.model.0.weight" not in state:
        raise _not_layout("U-Net generator", "model.model.0.weight", state, model)
    depth = max(k.count(".model.") for k in state)  # one '.model.' per nesting level
    # No weights tell: the reference trains pix2pix with dropout unless --no_dropout.
    source = "reference default" if asked.dropout is None else "caller"
    output_nc = state["model.model.3.weight"].shape[1]     # ConvTranspose2d: (in, out, k, k)
    return {"depth": depth, "ngf": state["model.model.0.weight"].shape[0],
            "dropout": True if asked.dropout is None else asked.dropout,
            **_shared_config(state, asked, "model.model.0", output_nc)}, source


def infer_maskcyclegan_config(state: dict[str, torch.Tensor], asked: Asked = Asked(),
                              model: str = "maskcyclegan") -> tuple[dict, str]:
    for key in ("mask_model.weight", "context_model.weight"):
        if key not in state:
            raise _not_layout("Mask CycleGAN generator (mask-cgan Generator with use_mask)",
                              key, state, model)
    return infer_resnet_config(state, asked, model)


# Settings some models lack, at the value that means "as those models are built"; a file that
# needs another value cannot be imported as such a model.
PLAIN = {"norm": "instance", "out_channels": None, "running_stats": False}


def _fit(values: dict, model: str) -> dict:
    known = {f.name for f in fields(get_entry(model).config)}
    for name in sorted(set(values) - known):
        if values[name] != PLAIN.get(name):
            takers = sorted(n for n, e in MODELS.items() if e.reference in LAYOUTS
                            and name in {f.name for f in fields(e.config)})
            raise CheckpointError(
                f"model {model!r} has no {name!r} setting, and this file needs {name} = "
                f"{values[name]!r}; models with it: {', '.join(takers)}")
    return {k: v for k, v in values.items() if k in known}


def convert(state: dict[str, torch.Tensor], model: str, asked: Asked = Asked()
            ) -> tuple[dict[str, torch.Tensor], dict, str]:
    """(i2i state_dict, config values, how dropout was chosen) from a reference state_dict."""
    layout = get_entry(model).reference
    if layout not in LAYOUTS:
        known = sorted(name for name, entry in MODELS.items() if entry.reference in LAYOUTS)
        raise CheckpointError(f"no reference importer for model {model!r}; "
                              f"known: {', '.join(known)}")
    state = {k.removeprefix("module."): v for k, v in state.items()}   # DataParallel saves
    infer_config, key_map = LAYOUTS[layout]
    config, dropout_from = infer_config(state, asked, model)
    mapping = key_map(config)
    converted, unexpected = {}, []
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf in STALE_NORM_STATS and config["norm"] != "batch":
            continue         # old InstanceNorm running stats: unused with track_running_stats=False
        if prefix in mapping:
            converted[f"{mapping[prefix]}.{leaf}"] = value
        else:
            unexpected.append(key)
    if unexpected:
        raise CheckpointError(f"unexpected keys for a reference {model} generator: "
                              f"{unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}; "
                              f"{describe(state, model)}")
    return converted, _fit(config, model), dropout_from


# layout (ModelEntry.reference) -> (config and dropout source from the state_dict and what the
# caller asked, key map from that config)
LAYOUTS = {
    "resnet": (infer_resnet_config,
               lambda config: resnet_key_map(config["n_blocks"], config["dropout"])),
    "unet": (infer_unet_config, lambda config: unet_key_map(config["depth"])),
    "maskcyclegan": (infer_maskcyclegan_config,
                     lambda config: maskcyclegan_key_map(config["n_blocks"], config["dropout"])),
}


def direction_of(path: Path, asked: str | None) -> tuple[str, str]:
    """(AtoB | BtoA, where it came from): the caller's, else the file name's (the reference's
    G_A maps A to B and G_B maps B to A; mask-cgan's netG_A2B / netG_B2A), else AtoB."""
    if asked is not None:
        if asked not in DIRECTIONS:
            raise CheckpointError(f"--direction must be AtoB or BtoA, got {asked!r}")
        return asked, "caller"
    if re.search(r"G_A$|A2B$", path.stem):
        return "AtoB", "file name"
    if re.search(r"G_B$|B2A$", path.stem):
        return "BtoA", "file name"
    return "AtoB", "reference default"


def import_reference(path: str | Path, model: str, out: str | Path,
                     dropout: bool | None = None, **asked) -> Path:
    """Read a reference `.pth` generator safely and write it as an i2i checkpoint.

    dropout: None takes it from the keys where they tell (ResNet) and otherwise the reference's
    default (pix2pix U-Net: on); False is the reference's --no_dropout. The other keywords are
    `Asked`'s: norm, input_nc, output_nc, running_stats (--eval), direction.
    """
    path = Path(path)
    asked = Asked(dropout=dropout, **asked)
    if asked.norm is not None and asked.norm not in NORMS:
        raise CheckpointError(f"--norm must be one of {', '.join(NORMS)}, got {asked.norm!r}")
    direction = direction_of(path, asked.direction)
    if not path.is_file():
        raise CheckpointError(f"reference checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:      # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path} could not be read as a weights-only state_dict: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a plain state_dict of tensors")
    converted, values, dropout_from = convert(state, model, asked)
    config = make_config(model, values)
    module = build(model, config)
    load_state(module, converted, source=str(path))      # lists missing/unexpected/shape problems
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # The reference's crop: 256 (its default), or a U-Net's own size (unet_128 at 128); export
    # and serving take it as the working size.
    size = 2 ** values["depth"] if "depth" in values else REFERENCE_CROP
    meta = {"imported_from": path.name, "source_sha256": digest, "data": {"kind": "reference"},
            "dropout_from": dropout_from, "direction": direction[0],
            "direction_from": direction[1],
            "training": {"size": size, "size_from": "reference crop"}}
    return save_checkpoint(out, model, config, module.state_dict(), step=0, meta=meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="i2i-import", description=__doc__.splitlines()[0])
    parser.add_argument("pth", help="reference generator state_dict, e.g. latest_net_G_A.pth")
    parser.add_argument("--model", default="cyclegan",
                        help="cyclegan, additive, pix2pix or maskcyclegan")
    parser.add_argument("--out", required=True, help="the i2i checkpoint to write (.safetensors)")
    parser.add_argument("--no-dropout", action="store_true",
                        help="the model was trained with the reference's --no_dropout (pix2pix; "
                             "ResNet files show it in their keys)")
    parser.add_argument("--norm", choices=NORMS, default=None,
                        help="the reference's --norm; read off the keys (checked if given)")
    parser.add_argument("--input-nc", type=int, default=None,
                        help="the reference's --input_nc, e.g. 1 for grey input; read off the "
                             "keys (checked if given)")
    parser.add_argument("--output-nc", type=int, default=None,
                        help="the reference's --output_nc; read off the keys (checked if given)")
    parser.add_argument("--eval", dest="running_stats", action="store_true",
                        help="batch norm uses its running statistics at inference, as the "
                             "reference's test --eval (default: each image's own statistics, "
                             "as its test without --eval at batch 1)")
    parser.add_argument("--direction", choices=DIRECTIONS, default=None,
                        help="which way the generator maps, recorded in the checkpoint "
                             "(default: from a G_A / G_B / A2B / B2A file name, else AtoB)")
    args = parser.parse_args(argv)
    try:
        written = import_reference(args.pth, args.model, args.out,
                                   dropout=False if args.no_dropout else None, norm=args.norm,
                                   input_nc=args.input_nc, output_nc=args.output_nc,
                                   running_stats=args.running_stats, direction=args.direction)
    except (CheckpointError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
