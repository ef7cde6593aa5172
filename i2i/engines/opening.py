"""open_engine: every check that opening an engine needs, then the engine.

eager and fused run the PyTorch model from its checkpoint; onnxruntime, tensorrt and aoti run
the artifacts of an i2i-export directory, whose manifest gives each signature's files, the
batch range and the size. The checks come first and raise with what to do, so that
engine_availability can say why an engine cannot open here without loading anything heavy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..manifest import manifest_signatures, read_manifest, sha256, stem
from ..models import load, read_document, signatures
from .base import PRECISIONS, Engine, EngineSpec

DEFAULT_MAX_BATCH = 32              # eager/fused: nothing fixes a batch limit but memory


@dataclass
class _Plan:
    """What opening an engine needs, checked without loading anything heavy."""

    cls: type
    device: str
    precision: str
    manifest: dict | None = None
    checkpoint: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)       # signature -> artifact
    unavailable: dict[str, str] = field(default_factory=dict)  # signature -> why not
    providers: list | None = None


def _engines() -> dict[str, type]:
    from . import ENGINES
    return ENGINES


def engine_class(name: str) -> type:
    if name not in _engines():
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(_engines())}, auto")
    return _engines()[name]


def torch_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use 'cpu'")
    if target.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    return "cpu" if target.type == "cpu" else f"cuda:{target.index or 0}"


def _precision(cls: type, precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    offered = tuple(cls.artifacts) if cls.artifacts else ("fp32", "fp16", "bf16")
    if precision == "auto":     # fused is the fast path: fp16 where the GPU has tensor cores
        fast = cls.name == "fused" and device != "cpu"
        return "fp16" if fast else ("fp32" if "fp32" in offered else offered[0])
    if precision not in offered:
        kind = f"{offered[0]} only" if len(offered) == 1 else ", ".join(offered)
        raise ValueError(f"engine {cls.name!r} runs {kind}, not {precision}; use "
                         f"precision='auto', or an engine that runs {precision} (" +
                         ", ".join(n for n, c in _engines().items()
                                   if precision in (c.artifacts or ("fp32", "fp16", "bf16")))
                         + ")")
    return precision


def _artifacts(plan: _Plan, export_dir: Path | None) -> None:
    """Each signature's artifact for this engine and precision: the default's must be there;
    others that are missing go to plan.unavailable with the reason."""
    key, suffix, flags = plan.cls.artifacts[plan.precision]
    if export_dir is None:
        raise ValueError(f"engine {plan.cls.name!r} runs model{suffix} from an export "
                         f"directory: pass export_dir (--export-dir), written by i2i-export "
                         f"{flags}")
    plan.manifest = read_manifest(export_dir)
    for label, signature in plan.manifest["signatures"].items():
        entry = signature.get("artifacts", {}).get(key) or {}
        path = Path(export_dir) / f"{stem(label)}{suffix}"
        if not path.is_file() or "file" not in entry:
            why = f" (at export: {entry['skipped']})" if "skipped" in entry else ""
            if label == "default":
                raise FileNotFoundError(f"{path} not found{why}: export it with i2i-export "
                                        f"{flags} --out {export_dir}")
            plan.unavailable[label] = (f"{export_dir} has no {plan.precision} {label} variant "
                                       f"({path.name}){why}; re-export with i2i-export "
                                       f"{flags}, or serve with --engine eager")
            continue
        _check_hash(path, entry, f"re-export with i2i-export {flags} --out {export_dir}")
        if entry.get("passed") is False:
            warnings.warn(f"{path} missed its parity check at export ({entry.get('parity')}); "
                          "its outputs may differ from the checkpoint's", stacklevel=4)
        plan.files[label] = path


def _check_hash(path: Path, entry: dict, redo: str) -> None:
    """The artifact must be the file the export gate hashed (read once, in blocks)."""
    if not entry.get("sha256"):
        raise ValueError(f"{path}: its manifest entry has no sha256 (written before i2i hashed "
                         f"artifacts), so it cannot be checked; {redo}")
    if sha256(path) != entry["sha256"]:
        raise ValueError(f"{path} changed since export (its sha256 is not the one the manifest "
                         f"records, {entry['sha256'][:12]}...); {redo}")


def _checkpoint(name: str, export_dir: Path | None, checkpoint: Path | None) -> Path:
    """The checkpoint to run: the given one (which must be the exported one, if both are given),
    else a copy of the exported checkpoint inside export_dir (found by name, checked by sha256)."""
    manifest = read_manifest(export_dir) if export_dir is not None else None
    want = (manifest or {}).get("checkpoint", {})
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found; train one with i2i-train")
        if want.get("sha256") and sha256(path) != want["sha256"]:
            raise ValueError(f"checkpoint {path} is not the one {export_dir} was exported from "
                             f"({want.get('file')}, sha256 {want['sha256'][:12]}...); pass that "
                             "checkpoint, or re-export from this one")
        return path
    if manifest is None:
        raise ValueError(f"engine {name!r} runs the PyTorch model: pass checkpoint "
                         "(--checkpoint PATH)")
    copy = Path(export_dir) / str(want.get("file", ""))
    if want.get("file") and copy.is_file() and sha256(copy) == want.get("sha256"):
        return copy
    raise ValueError(f"engine {name!r} runs the PyTorch model, and {export_dir} records only the "
                     f"name of its checkpoint ({want.get('file')}), not where it is: pass "
                     f"--checkpoint PATH (checkpoint=...), or copy it into {export_dir}")


def onnx_providers(device: str) -> tuple[str, list]:
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        device = "cuda:0" if has_cuda and torch.cuda.is_available() else "cpu"
    device = torch_device(device)
    if device == "cpu":
        return device, ["CPUExecutionProvider"]
    if not has_cuda:
        raise ValueError(f"device {device!r}: this onnxruntime has no CUDA provider "
                         "(pip install onnxruntime-gpu), or use device='cpu'")
    index = torch.device(device).index or 0
    return device, [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def _openvino_device(device: str, precision: str) -> str:
    """The CPU, once the openvino package and (for bf16) the CPU's support are checked."""
    from .openvino import availability, bf16_support

    reason = availability()
    if reason is not None:
        raise RuntimeError(f"engine 'openvino' cannot run here: {reason}")
    if device not in ("auto", "cpu"):
        raise ValueError(f"engine 'openvino' runs on the CPU; use device='cpu', not {device!r}")
    if precision == "bf16":
        reason = bf16_support()
        if reason is not None:
            raise RuntimeError(f"engine 'openvino' cannot run bf16 here: {reason}")
    return "cpu"


def _plan(name: str, export_dir: Path | None, checkpoint: Path | None, device: str,
          precision: str) -> _Plan:
    """Every check that opening `name` needs, short of loading it; raises with the reason."""
    cls = engine_class(name)
    if cls.artifacts is None:
        path = _checkpoint(name, export_dir, checkpoint)
        device = torch_device(device)
        return _Plan(cls, device, _precision(cls, precision, device), checkpoint=path)
    providers = None
    if name == "onnxruntime":
        device, providers = onnx_providers(device)
    elif name == "openvino":
        device = _openvino_device(device, precision)
    elif name == "tensorrt":
        from .tensorrt import availability

        reason = availability()
        if reason is not None:
            raise RuntimeError(f"engine 'tensorrt' cannot run here: {reason}")
        device = torch_device("cuda:0" if device == "auto" else device)
        if device == "cpu":
            raise ValueError("engine 'tensorrt' runs on a CUDA GPU only; use device='cuda'")
    plan = _Plan(cls, device, _precision(cls, precision, device), providers=providers)
    _artifacts(plan, export_dir)
    entry = plan.manifest["signatures"]["default"]["artifacts"][cls.artifacts[plan.precision][0]]
    if name == "tensorrt":
        from .tensorrt import check_plan_compatible

        check_plan_compatible(entry)           # another GPU or TensorRT version: re-export
    if name == "aoti":                          # a package runs on the device it was built for
        built = "cpu" if entry.get("device", "cpu") == "cpu" else "cuda"
        where = plan.files["default"]
        if built == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{where} was compiled for a CUDA GPU and this machine has "
                               "none; re-export it here with i2i-export --formats aoti")
        plan.device = torch_device(built if device == "auto" else device)
        if not plan.device.startswith(built):
            raise ValueError(f"{where} was compiled for {built}, not {plan.device}; open it "
                             "with device='auto', or re-export it on that device")
    return plan


def engine_availability(name: str, export_dir: Path | None, checkpoint: Path | None, *,
                        device: str = "auto", precision: str = "auto") -> str | None:
    """None when `open_engine(name, ...)` can open here, otherwise the reason it cannot."""
    if name == "auto":
        from .choice import choose
        try:
            choose(Path(export_dir) if export_dir else None, device, precision)
        except (ValueError, FileNotFoundError) as err:
            return str(err)
        return None
    engine_class(name)
    try:
        _plan(name, Path(export_dir) if export_dir else None, checkpoint, device, precision)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as err:
        return str(err)
    return None


def open_engine(name: str, *, export_dir: Path | None = None, checkpoint: Path | None = None,
                device: str = "auto", precision: str = "auto", max_batch_size: int | None = None,
                compile: bool = False) -> Engine:
    """Open engine `name` (one of ENGINES, or "auto": see i2i.engines.choice).

    eager/fused: the checkpoint (or the exported one, when export_dir holds a copy of it); a
    checkpoint given with export_dir must be the one exported. max_batch_size defaults to 32.
    onnxruntime/tensorrt/aoti: export_dir's artifacts, one per signature; max_batch_size
    defaults to the exported maximum and may only lower it. precision "auto": fp16 for fused on
    CUDA and for tensorrt, else fp32. compile: torch.compile the module (eager/fused only).
    """
    if name == "auto":
        from .choice import open_chosen
        return open_chosen(Path(export_dir) if export_dir else None, device=device,
                           precision=precision, max_batch_size=max_batch_size)
    engine_class(name)
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    plan = _plan(name, Path(export_dir) if export_dir else None, checkpoint, device, precision)
    if plan.cls.artifacts is None:
        return _open_torch(plan, export_dir, max_batch_size or DEFAULT_MAX_BATCH, compile)
    if compile:
        raise ValueError(f"compile=True applies to the eager and fused engines, not {name!r} "
                         "(its artifact is compiled at export)")
    manifest = plan.manifest
    exported = int(manifest["batch"]["max"])
    every = manifest_signatures(manifest)
    size = (int(manifest["size"][0]), int(manifest["size"][1]))
    dynamic = manifest["signatures"]["default"]["artifacts"].get("onnx", {}).get("dynamic", [])
    fixed = name not in ("onnxruntime", "openvino") or "height" not in dynamic  # ONNX graphs
    spec = EngineSpec(
        model=manifest["model"], signatures={k: every[k] for k in plan.files},
        max_batch_size=min(max_batch_size or exported, exported),
        size=size if fixed else None, size_multiple=int(manifest["size_multiple"]),
        default_size=size, precision=plan.precision, device=plan.device,
        source=manifest["checkpoint"]["sha256"],
        direction=manifest["checkpoint"].get("direction"),
        unavailable={k: every[k] for k in plan.unavailable}, reasons=plan.unavailable)
    extra = () if plan.providers is None else (plan.providers,)
    try:
        return plan.cls(plan.files, spec, *extra)
    except (ValueError, FileNotFoundError, RuntimeError):
        raise                                   # the engines' own errors say what to do
    except Exception as err:                    # e.g. onnxruntime's InvalidProtobuf
        files = ", ".join(str(p) for p in plan.files.values())
        flags = plan.cls.artifacts[plan.precision][2]
        raise RuntimeError(f"engine {name!r} could not load {files} ({type(err).__name__}: "
                           f"{err}); the file is corrupt or was not written by this i2i: "
                           f"re-export with i2i-export {flags} --out {export_dir}") from err


def _open_torch(plan: _Plan, export_dir: Path | None, max_batch: int, compile: bool) -> Engine:
    module, _ = load(plan.checkpoint)
    document = read_document(plan.checkpoint)
    trained = document.get("meta", {}).get("training", {}).get("size")
    if trained:
        default = (int(trained), int(trained))
    elif export_dir is not None:
        default = tuple(int(s) for s in read_manifest(Path(export_dir))["size"])
    else:
        default = (256, 256)
    every = signatures(module)
    spec = EngineSpec(model=document["model"], signatures=every, max_batch_size=max_batch,
                      size=None, size_multiple=every["default"].size_multiple,
                      default_size=default, precision=plan.precision, device=plan.device,
                      source=sha256(plan.checkpoint),
                      direction=document.get("meta", {}).get("direction"))
    engine = plan.cls(module, spec)
    if compile:                                 # compiled after the fused modules are swapped in
        engine.module = torch.compile(engine.module)
    return engine
