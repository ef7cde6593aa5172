"""A folder translation as a Ray Data job: the local command's per-picture pipeline on a pool
of Ray actors, one engine each, on a laptop or a cluster.

    i2i-translate photos/ out/ --model exports/additive --ray                   (a local Ray)
    i2i-translate /shared/photos /shared/out --model /shared/exports/additive --ray HEAD:6379

The driver lists the inputs and names their outputs exactly as the local command does
(folder.list_inputs), so every output lands where the local command writes it. The list becomes
a Ray dataset of (input, output stem) rows; `map_batches` hands blocks of rows to an actor pool
whose actors each open the engine once (a GPU each where the cluster has GPUs) and run
folder.translate_files on their block: the done-check (the PNG stamp), decoding, the resolution
policy, the engine, PNG encoding and the atomic write are the local command's own code, so
the outputs are the same bytes and a re-run translates only what is not done. Actors read
the pictures themselves, in parallel: on a cluster the input, output and model paths must be
ones every node sees (a shared or network disk). The driver writes index.html at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .folder import FolderOptions, JobReport, finish, list_inputs, translate_files

ROWS_PER_BLOCK = 16        # pictures an actor takes per call: a few engine batches


@dataclass(frozen=True)
class EngineArgs:
    """What each actor opens its engine with (open_engine's arguments)."""

    engine: str
    model: Path
    device: str = "auto"
    precision: str = "auto"
    max_batch: int = 8

    def open(self, device: str | None = None):
        from ..engines import open_engine
        export = self.model.is_dir()
        return open_engine(self.engine, export_dir=self.model if export else None,
                           checkpoint=None if export else self.model,
                           device=device or self.device, precision=self.precision,
                           max_batch_size=self.max_batch)


def ray_module():
    """The ray package; ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401     (Ray Data needs pyarrow and pandas beside ray)
    except ImportError as err:
        raise ImportError(f"--ray needs Ray Data ({err}): pip install 'i2i[ray]'") from err
    return ray


class _Worker:
    """One actor: an engine opened once, then blocks of rows translated by the local code."""

    def __init__(self, args: EngineArgs, output_dir: str, options: FolderOptions) -> None:
        import ray
        gpus = ray.get_gpu_ids()
        self.engine = args.open("cuda" if gpus and args.device == "auto" else None)
        self.output_dir, self.options = Path(output_dir), options

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [Path(p) for p in rows["input"]]
        names = {f: Path(stem) for f, stem in zip(files, rows["stem"], strict=True)}
        report = translate_files(self.engine, files, self.output_dir, self.options, names)
        status = {p: ("translated", "") for p in report.translated}
        status.update({p: ("skipped", "") for p in report.skipped})
        status.update({p: ("failed", why) for p, why in report.failed})
        return {"input": np.array([str(f) for f in files]),
                "status": np.array([status[f][0] for f in files]),
                "reason": np.array([status[f][1] for f in files])}


def translate_with_ray(args: EngineArgs, input_dir: Path, output_dir: Path,
                       options: FolderOptions, address: str | None = None,
                       workers: int | None = None) -> JobReport:
    """Translate a folder on Ray: `address` a running cluster ("auto", "HOST:6379"), None a
    Ray this process starts (or the one it already joined); `workers` actors (default: one per
    GPU of the cluster, else one per CPU)."""
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    ray = ray_module()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    engine = args.open()            # the driver's: every check before any actor starts
    files, names = list_inputs(engine.spec, input_dir, output_dir, options)
    report = JobReport()
    if files:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if args.device in ("auto", "cuda") else 0
        size = workers or gpus or max(1, int(resources.get("CPU", 1)))
        ray.data.DataContext.get_current().enable_progress_bars = options.progress
        rows = [{"input": str(f), "stem": str(names[f])} for f in files]
        done = ray.data.from_items(rows).map_batches(
            _Worker, fn_constructor_args=(args, str(output_dir), replace(options, progress=False)),
            batch_size=ROWS_PER_BLOCK, compute=ray.data.ActorPoolStrategy(size=size),
            num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1).take_all()
        for row in sorted(done, key=lambda r: r["input"]):
            path = Path(row["input"])
            if row["status"] == "failed":
                report.failed.append((path, row["reason"]))
            else:
                getattr(report, row["status"]).append(path)
    finish(engine, input_dir, output_dir, options, names, report)
    return report
