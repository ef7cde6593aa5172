"""The training loop behind i2i-train: data -> recipe steps -> logs, samples, checkpoints.

A run folder holds:
    options.json                          the options the run was started with
    log.jsonl                             one line of losses every `log_every` steps (and of
                                          held-out metrics every `eval_every`: evaluation.py)
    samples/step_XXXXXX.png               input / mask / output grids on fixed images
    checkpoints/step_XXXXXX.train.safetensors   resumable training state (newest only)
    checkpoints/step_XXXXXX.safetensors   the inference checkpoint (i2i.models.load reads it)
    checkpoints/step_XXXXXX.BtoA.safetensors   the B -> A generator's, for recipes with one of
                                          the same model (the cycle recipes)
    loss_curve.png                        written at the end

At each checkpoint step the state is written before the checkpoints (A -> B, then B -> A),
each atomically, and the older states are removed last; a log line is one write of one line.
So a crash (a kill, a full disk, a power cut) can leave only: temporary `.*.tmp` files, a state
without its checkpoints, an older state beside the newest, or a torn last log line; `--resume`
(recovery.py) continues from the newest state in each case, writes the missing checkpoints and
drops the torn line, so the run ends as if never interrupted. A checkpoint newer than the newest
state (a run of an older i2i, which wrote the checkpoint first) is removed with a warning and
trained again.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..atomic import atomic_path, write_text
from ..data import open_data
from ..data.preprocess import Preprocess
from ..models import read_document, save_checkpoint
from ..runs import opposite, step_name
from . import distributed, recovery
from .evaluation import EVAL_COUNT, Evaluator
from .figures import loss_curve
from .recipe import Recipe, RecipeOptions
from .registry import DEFAULT_MODEL, RECIPES, RecipeEntry, recipe_entry
from .runlog import append_record, read_log, truncate_log
from .state import load_state, read_state_document, save_state


@dataclass
class TrainOptions:
    out: str
    model: str = DEFAULT_MODEL
    data: str = "synthetic:circle2square"
    supervised: bool = False          # the model's supervised recipe (registry entry)
    size: int = 64
    steps: int = 2000
    batch_size: int | None = None     # None -> the recipe's default (RECIPES[...].defaults)
    seed: int = 0
    lambda_r: float | None = None     # recipes that take it; None -> their default
    ngf: int = 64
    n_blocks: int | None = None
    depth: int | None = None          # pix2pix; None -> deepest the size allows, at most 8
    ndf: int = 64
    disc: str = "patch"
    disc_layers: int | None = None    # None -> the recipe's default (per scale if multi-scale)
    lr: float | None = None
    decay_start: float = 0.5          # fraction of steps after which lr decays linearly to 0
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "auto"              # auto | cpu | cuda[:i]
    amp: bool = False                 # bf16 autocast on CUDA
    progress: bool = True
    stop_after: int | None = None     # end this invocation at that step (resume later)
    masks: str | None = None          # recipes that take it: mask scheme, e.g. rects, center:0.5
    follow: str | None = None         # recipes that take it: paper | code (entry default)
    # Recipes that take them (registry.py); None -> the recipe's default.
    init_type: str | None = None      # normal | xavier | kaiming | orthogonal | default
    init_gain: float | None = None
    gan_mode: str | None = None       # lsgan | vanilla | wgangp
    lambda_cycle: float | None = None
    lambda_identity: float | None = None
    lambda_l1: float | None = None
    pool_size: int | None = None
    # Data (i2i.data.preprocess): what folders do to each training image; the pair direction.
    preprocess: str = "resize_and_crop"
    load_size: int | None = None      # None -> 286/256 of --size
    flip: bool = True
    direction: str = "AtoB"           # BtoA: train B -> A (swaps the domains)
    # The recipe's switches that are on or off (RecipeEntry.switches: --NAME of i2i-train),
    # e.g. TrainOptions(model="cut", switches={"fastcut": True}); one left out is off.
    switches: dict[str, bool] = field(default_factory=dict)
    nproc: int = 1                    # ranks training together (torchrun's WORLD_SIZE; the
                                      # loop records it); batch_size is each rank's
    # Held-out FID/KID/precision/recall every eval_every steps (0: never; evaluation.py).
    eval_every: int = 0
    eval_features: str | None = None  # inception (None) | tiny
    inception: str | None = None      # the FID Inception weights file
    eval_count: int = EVAL_COUNT

    def recipe(self) -> RecipeEntry:
        """The registry entry these options train (model, and --supervised)."""
        return recipe_entry(self.model, self.supervised)

    def resolved(self) -> TrainOptions:
        """A copy with every None default replaced by the recipe's value."""
        entry = self.recipe()
        values = {k: v for k, v in entry.defaults.items() if getattr(self, k) is None}
        switches = {**dict.fromkeys(entry.switches, False), **self.switches}
        return replace(self, **values, switches=switches)

    def recipe_options(self, n_labels: int = 1) -> RecipeOptions:
        """The options a recipe is built from; unset ones keep RecipeOptions' defaults."""
        depth = self.depth or max(2, min(8, self.size.bit_length() - 1))
        values = dict(size=self.size, batch_size=self.batch_size, ngf=self.ngf,
                      n_blocks=self.n_blocks, depth=depth, ndf=self.ndf, disc=self.disc,
                      disc_layers=self.disc_layers,
                      lambda_r=self.lambda_r, lr=self.lr, seed=self.seed, n_labels=n_labels,
                      masks=self.masks, follow=self.follow, init_type=self.init_type,
                      init_gain=self.init_gain, gan_mode=self.gan_mode,
                      lambda_cycle=self.lambda_cycle, lambda_identity=self.lambda_identity,
                      lambda_l1=self.lambda_l1, pool_size=self.pool_size,
                      switches=dict(self.switches))
        return RecipeOptions(**{k: v for k, v in values.items() if v is not None})

    def preprocessing(self) -> Preprocess:
        """What folder data do to each training image (--preprocess, --load-size, --no-flip)."""
        return Preprocess(self.preprocess, self.size, self.load_size, self.flip)


# The options a checkpoint's meta["training"] records.
TRAINING_META = ("size", "batch_size", "seed", "lr", "ndf", "disc", "disc_layers", "follow",
                 "init_type", "init_gain", "preprocess", "load_size", "flip")

# Options that may differ between a run and its resumption; everything else must match.
RESUMABLE_CHANGES = {"steps", "sample_every", "checkpoint_every", "log_every", "progress",
                     "device", "amp", "stop_after", "eval_every", "eval_features", "inception",
                     "eval_count"}


def learning_rate(options: TrainOptions, step: int) -> float:
    """Constant, then linear decay to zero over the last (1 - decay_start) of the steps."""
    start = int(options.steps * options.decay_start)
    if step < start:
        return options.lr
    return options.lr * max(0.0, 1.0 - (step - start) / max(1, options.steps - start))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for, but no CUDA device is available")
    return device


def logged_seconds(checkpoint: Path) -> float | None:
    """Training wall time log.jsonl records at the checkpoint's step, counted from the start of
    the invocation that reached it (a resumed run restarts the count); None without a log."""
    checkpoint = Path(checkpoint)
    log = checkpoint.parent.parent / "log.jsonl"
    if not log.exists():
        return None
    step = read_document(checkpoint)["step"]
    times = [r["time"] for r in read_log(log) if r["step"] == step and "time" in r]
    return times[-1] if times else None


def newest_state(run: Path) -> Path | None:
    """The training state --resume continues from: the one of the highest step, or None."""
    states = recovery.step_files(Path(run), states=True)
    return states[-1][1] if states else None


def train(options: TrainOptions, resume: bool = False) -> Path:
    """Train per `options` into options.out; returns the final checkpoint's path. Launched by
    torchrun, each rank trains its share of every batch (distributed.py); rank 0 writes."""
    ranks, device_name = distributed.join(options.device)
    try:
        return _train(options, resume, ranks, device_name)
    finally:
        distributed.leave(ranks)


def _train(options: TrainOptions, resume: bool, ranks: distributed.Ranks, device_name: str
           ) -> Path:
    run = Path(options.out)
    start_step = 0
    if ranks.writer:
        recovery.remove_partial_writes(run)
    state_path = recovery.state_to_resume(run) if resume else None
    if state_path is not None:
        options = _resumed_options(state_path, options)
        if options.nproc != ranks.size:
            raise ValueError(f"--resume: {run} was trained by {options.nproc} rank(s) and this "
                             f"launch has {ranks.size}; each step's batch spans the ranks, so "
                             f"continue it with i2i-train --nproc {options.nproc}")
    else:
        recovery.check_fresh(run)
        options = replace(options, nproc=ranks.size)
    options = options.resolved()
    torch.manual_seed(options.seed)
    device = pick_device(device_name)
    entry = options.recipe()
    paired = entry.pairs
    data = open_data(options.data, options.size, paired=paired, seed=options.seed,
                     labelled=entry.labels, preprocess=options.preprocessing(),
                     direction=options.direction)
    n_labels = len(data.labels) if entry.labels else 1
    recipe, config = entry.make(options.recipe_options(n_labels))
    recipe.to(device)
    if state_path is not None:
        start_step = recovery.read_state(state_path, load_state, recipe, device)
    distributed.share(recipe, ranks)
    log_path = run / "log.jsonl"
    if ranks.writer:
        run.mkdir(parents=True, exist_ok=True)
        write_text(run / "options.json", json.dumps(asdict(options), indent=2) + "\n")
        truncate_log(log_path, start_step)
    # Eight fixed pictures for samples/, or one where pictures keep their own shapes.
    shown = 8 if options.preprocessing().crops else 1
    fixed = {k: v.to(device) for k, v in data.batch(0, shown, options.seed + 12345).items()}
    meta = {"data": data.describe(), "loss_weights": recipe.loss_weights,
            "supervised": options.supervised, "direction": options.direction,
            "training": {k: getattr(options, k) for k in TRAINING_META}}
    if recipe.one_way:                  # why no B -> A checkpoint: export reads it from here
        meta["one_way"] = recipe.one_way
    if state_path is not None and ranks.writer:    # what a crash can have left beside it
        recovery.settle_checkpoints(run, start_step, {
            kind: lambda path, net=net, about=about: save_checkpoint(
                path, entry.model, config, net.state_dict(), step=start_step, meta=about)
            for kind, (net, about) in _generators(recipe, meta).items()})
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=options.amp and device.type == "cuda")
    evaluator = Evaluator.build(options, data, recipe.translator, device) if ranks.writer \
        else None
    end = min(options.steps, options.stop_after or options.steps)
    bar = tqdm(range(start_step, end), initial=start_step, total=options.steps,
               disable=not (options.progress and ranks.writer),
               desc=f"{options.model} {run.name}",
               dynamic_ncols=True)
    last = start_step
    started = time.perf_counter()
    # Unbuffered: one write call a line. Ranks but 0 write nothing.
    log_file = open(log_path, "ab", buffering=0) if ranks.writer else contextlib.nullcontext()
    with log_file as log:
        for step in bar:
            recipe.set_lr(learning_rate(options, step))
            recipe.step_index = step
            # Every rank draws the N x B batch and trains on its own B rows.
            drawn = data.batch(step, options.batch_size * ranks.size, options.seed)
            batch = {k: v.to(device) for k, v in ranks.rows(drawn).items()}
            with autocast:
                losses = recipe.step(batch)
            last = step + 1
            due = last % options.log_every == 0 or last == end
            if due:
                losses = ranks.mean(losses)
            if not ranks.writer:
                continue
            if due:
                append_record(log, {"step": last,
                                    "time": round(time.perf_counter() - started, 3),
                                    "lr": learning_rate(options, step), "losses": losses})
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
            if last % options.sample_every == 0 or last == end:
                _write_samples(run, recipe, fixed, last, paired)
            if last % options.checkpoint_every == 0 or last == end:
                _write_checkpoint(run, entry.model, recipe, config, options, meta, last)
            if evaluator is not None and evaluator.due(last, end):
                append_record(log, evaluator.record(recipe.translator, last))
    bar.close()
    final = run / "checkpoints" / f"step_{last:06d}.safetensors"
    if ranks.writer and log_path.stat().st_size:
        loss_curve(read_log(log_path), run / "loss_curve.png",
                   title=f"{options.model} on {options.data}")
    ranks.wait()            # every rank returns once rank 0's files are written
    return final


def _generators(recipe: Recipe, meta: dict) -> dict[str, tuple[torch.nn.Module, dict]]:
    """The inference checkpoints a step writes, by file kind (i2i/runs.py): the translator, then
    the B -> A generator where the recipe trains one of the same model, each with its meta."""
    found = {"AtoB": (recipe.translator, meta)}
    reverse = recipe.nets.get("G_BA")
    if reverse is not None and type(reverse) is type(recipe.translator):
        found["BtoA"] = (reverse, {**meta, "direction": opposite(meta["direction"])})
    return found


def _write_checkpoint(run: Path, model: str, recipe: Recipe, config, options: TrainOptions,
                      meta: dict, step: int) -> Path:
    # The state first: a crash before a checkpoint leaves a state that --resume continues
    # from (and rewrites the checkpoints from); a checkpoint is never left without its state.
    folder = run / "checkpoints"
    state = save_state(folder / step_name(step, "state"), recipe, step, asdict(options))
    for kind, (net, about) in _generators(recipe, meta).items():
        save_checkpoint(folder / step_name(step, kind), model, config, net.state_dict(),
                        step=step, meta=about)
    for older in folder.glob("step_*.train.safetensors"):   # only the newest is needed to resume
        if older != state:
            older.unlink()
    return folder / step_name(step, "AtoB")


@torch.no_grad()
def _write_samples(run: Path, recipe: Recipe, fixed: dict[str, torch.Tensor], step: int,
                   paired: bool) -> None:
    translator = recipe.translator
    was_training = translator.training
    translator.eval()
    scale = max(1, 128 // fixed["A"].shape[-1])
    picture = recipe.sample_grid(fixed, paired, scale)
    translator.train(was_training)
    with atomic_path(run / "samples" / f"step_{step:06d}.png") as tmp:
        picture.save(tmp, format="PNG")


def _resumed_options(state_path: Path, given: TrainOptions) -> TrainOptions:
    saved = recovery.read_state(state_path,
                                lambda path: dict(read_state_document(path)["options"]))
    names = {f.name for f in fields(TrainOptions)}
    merged = {k: v for k, v in saved.items() if k in names}
    merged["switches"] = {**_switches_saved_apart(saved), **merged.get("switches", {})}
    if {**merged["switches"], **given.switches} == merged["switches"]:    # none given differs
        given = replace(given, switches=merged["switches"])
    clashes = [k for k in names - RESUMABLE_CHANGES - {"out"}
               if getattr(given, k) != getattr(TrainOptions(out=""), k)
               and getattr(given, k) != merged.get(k)]
    if clashes:
        raise ValueError(f"--resume continues {state_path.parent.parent} with its saved options; "
                         f"these differ from it: {sorted(clashes)}")
    defaults = TrainOptions(out="")
    for k in RESUMABLE_CHANGES:          # a flag given again wins; otherwise the saved value
        if getattr(given, k) != getattr(defaults, k) or k not in merged:
            merged[k] = getattr(given, k)
    merged["stop_after"] = given.stop_after       # never carried over from the saved run
    merged["out"] = given.out
    return TrainOptions(**merged)


def _switches_saved_apart(saved: dict) -> dict[str, bool]:
    """The switches a run of an older i2i saved as options of their own (e.g. "fastcut": true
    beside "model"), where they now sit in "switches"; those saved as null were not given."""
    known = {name for entry in RECIPES.values() for name in entry.switches}
    return {k: v for k, v in saved.items() if k in known and v is not None}
