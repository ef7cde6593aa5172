"""Import generators saved by the reference CycleGAN/pix2pix and Mask CycleGAN code.

Those files (`latest_net_G_A.pth`, `latest_net_G.pth`; mask-cgan's `runs/<run>/netG_A2B.pth`) are
plain state_dicts keyed by nn.Sequential indices (`model.1.weight`, ...). They are read with
`torch.load(weights_only=True)`, which refuses arbitrary pickled objects; the keys are mapped to
i2i's named modules, the architecture (ngf, blocks, depth, dropout) is read off the keys and
shapes, and the result is written as an i2i checkpoint.

    python -m i2i.models.reference latest_net_G_A.pth --model cyclegan --out horse2zebra.safetensors
    python -m i2i.models.reference latest_net_G.pth --model pix2pix --no-dropout --out f.safetensors
    python -m i2i.models.reference netG_A2B.pth --model maskcyclegan --out m.safetensors

Layouts (a registry entry's `reference` field):
- resnet: the CycleGAN ResnetGenerator (models cyclegan, additive). Dropout is read off the keys
  (a dropout layer moves each block's second conv from `conv_block.5` to `conv_block.6`); an
  explicit dropout choice that contradicts them is an error.
- unet: the pix2pix UnetGenerator (model pix2pix). Dropout has no weights, so the file cannot
  tell: it is the caller's choice, default on as the reference trains pix2pix unless
  `--no_dropout` was given; pass `--no-dropout` (dropout=False) for a model trained with it.
- maskcyclegan: mask-cgan's `Generator(use_mask=True)` (github.com/minfawang/mask-cgan,
  model/models.py, read for this layout): the same `model.<i>` Sequential as the CycleGAN ResNet
  (without dropout) plus two 1x1 convolutions `mask_model` (E_m) and `context_model` (E_c),
  mapped to i2i's `mask_encoder` and `context_encoder`. mask-cgan feeds a C-channel mask; i2i
  repeats its one-channel mask over C, the same input wherever the C channels are equal.
The chosen dropout is recorded in the checkpoint's config, and how it was chosen in
meta["dropout_from"] ("keys", "caller" or "reference default").
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import torch

from . import MODELS, CheckpointError, build, get_entry, load_state, make_config
from .checkpoint import save_checkpoint

STALE_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")
SHOWN_KEYS = 6                    # how many of a file's keys an error lists


def resnet_key_map(n_blocks: int, dropout: bool) -> dict[str, str]:
    """Reference module prefix -> i2i module prefix for the ResNet generator."""
    second = 6 if dropout else 5
    mapping = {"model.1": "generator.stem.conv", "model.4": "generator.down.0.conv",
               "model.7": "generator.down.1.conv",
               f"model.{10 + n_blocks}": "generator.up.0.conv",
               f"model.{13 + n_blocks}": "generator.up.1.conv",
               f"model.{17 + n_blocks}": "generator.head"}
    for i in range(n_blocks):
        mapping[f"model.{10 + i}.conv_block.1"] = f"generator.blocks.{i}.conv1"
        mapping[f"model.{10 + i}.conv_block.{second}"] = f"generator.blocks.{i}.conv2"
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
# Config from the keys (and the caller's dropout choice)


def infer_resnet_config(state: dict[str, torch.Tensor], dropout: bool | None = None,
                        model: str = "cyclegan") -> tuple[dict, str]:
    if "model.1.weight" not in state:
        raise _not_layout("ResNet generator", "model.1.weight", state, model)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    found = any(".conv_block.6.weight" in k for k in state)
    if dropout is not None and blocks and dropout != found:
        if found:
            raise CheckpointError(
                "the file's residual blocks hold a dropout layer (second conv at "
                "'model.10.conv_block.6'): it was trained with dropout, so import it without "
                "--no-dropout (dropout=None or True)")
        raise CheckpointError(
            "the file's residual blocks hold no dropout layer (second conv at "
            "'model.10.conv_block.5'): it was trained with --no_dropout, so import it without "
            "a dropout choice (dropout=None or False)")
    return {"ngf": state["model.1.weight"].shape[0], "n_blocks": len(blocks),
            "channels": state["model.1.weight"].shape[1], "dropout": found}, "keys"


def infer_unet_config(state: dict[str, torch.Tensor], dropout: bool | None = None,
                      model: str = "pix2pix") -> tuple[dict, str]:
    if "model.model.0.weight" not in state:
        raise _not_layout("U-Net generator", "model.model.0.weight", state, model)
    depth = max(k.count(".model.") for k in state)  # one '.model.' per nesting level
    first = state["model.model.0.weight"]
    # No weights tell: the reference trains pix2pix with dropout unless --no_dropout.
    source = "reference default" if dropout is None else "caller"
    return {"depth": depth, "ngf": first.shape[0], "channels": first.shape[1],
            "dropout": True if dropout is None else dropout}, source


def infer_maskcyclegan_config(state: dict[str, torch.Tensor], dropout: bool | None = None,
                              model: str = "maskcyclegan") -> tuple[dict, str]:
    for key in ("mask_model.weight", "context_model.weight"):
        if key not in state:
            raise _not_layout("Mask CycleGAN generator (mask-cgan Generator with use_mask)",
                              key, state, model)
    return infer_resnet_config(state, dropout, model)


def convert(state: dict[str, torch.Tensor], model: str,
            dropout: bool | None = None) -> tuple[dict[str, torch.Tensor], dict, str]:
    """(i2i state_dict, config values, how dropout was chosen) from a reference state_dict."""
    layout = get_entry(model).reference
    if layout not in LAYOUTS:
        known = sorted(name for name, entry in MODELS.items() if entry.reference in LAYOUTS)
        raise CheckpointError(f"no reference importer for model {model!r}; "
                              f"known: {', '.join(known)}")
    state = {k.removeprefix("module."): v for k, v in state.items()}   # DataParallel saves
    infer_config, key_map, stale_stats = LAYOUTS[layout]
    config, dropout_from = infer_config(state, dropout, model)
    mapping = key_map(config)
    converted, unexpected = {}, []
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in mapping:
            converted[f"{mapping[prefix]}.{leaf}"] = value
        elif leaf in STALE_NORM_STATS and stale_stats:
            continue         # old InstanceNorm running stats: unused with track_running_stats=False
        else:
            unexpected.append(key)
    if unexpected:
        raise CheckpointError(f"unexpected keys for a reference {model} generator: "
                              f"{unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}; "
                              f"{describe(state, model)}")
    return converted, config, dropout_from


# layout (ModelEntry.reference) -> (config and dropout source from the state_dict and the
# caller's dropout, key map from that config, whether old InstanceNorm running statistics may be
# present and are dropped)
LAYOUTS = {
    "resnet": (infer_resnet_config,
               lambda config: resnet_key_map(config["n_blocks"], config["dropout"]), True),
    "unet": (infer_unet_config, lambda config: unet_key_map(config["depth"]), False),
    "maskcyclegan": (infer_maskcyclegan_config,
                     lambda config: maskcyclegan_key_map(config["n_blocks"], config["dropout"]),
                     True),
}


def import_reference(path: str | Path, model: str, out: str | Path,
                     dropout: bool | None = None) -> Path:
    """Read a reference `.pth` generator safely and write it as an i2i checkpoint.

    dropout: None takes it from the keys where they tell (ResNet) and otherwise the reference's
    default (pix2pix U-Net: on); False is the reference's --no_dropout.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"reference checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:      # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path} could not be read as a weights-only state_dict: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a plain state_dict of tensors")
    converted, values, dropout_from = convert(state, model, dropout)
    config = make_config(model, values)
    module = build(model, config)
    load_state(module, converted, source=str(path))      # lists missing/unexpected/shape problems
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = {"imported_from": path.name, "source_sha256": digest, "data": {"kind": "reference"},
            "dropout_from": dropout_from}
    return save_checkpoint(out, model, config, module.state_dict(), step=0, meta=meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pth", help="reference generator state_dict, e.g. latest_net_G_A.pth")
    parser.add_argument("--model", default="cyclegan",
                        help="cyclegan, additive, pix2pix or maskcyclegan")
    parser.add_argument("--out", required=True, help="the i2i checkpoint to write (.safetensors)")
    parser.add_argument("--no-dropout", action="store_true",
                        help="the model was trained with the reference's --no_dropout (pix2pix; "
                             "ResNet files show it in their keys)")
    args = parser.parse_args(argv)
    try:
        written = import_reference(args.pth, args.model, args.out,
                                   dropout=False if args.no_dropout else None)
    except (CheckpointError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
