"""i2i-serve: serve a model over HTTP (KServe v2 + /v1/translate), or translate a folder."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from ..engines.base import PRECISIONS
from .translate_cli import add_folder_arguments, folder_options, run_folder

EXAMPLES = """examples:
  i2i-serve --export exports/additive                      # onnxruntime engine on 127.0.0.1:8000
  i2i-serve --checkpoint runs/x/checkpoints/step_001000.safetensors --engine eager
  i2i-serve --export exports/additive --input-dir in/ --output-dir out/ --masks
  i2i-serve --export exports/lomit --input-dir in/ --output-dir out/ --exemplar ref.png
  i2i-serve --export exports/maskcyclegan --input-dir in/ --output-dir out/ --mask center:0.5"""


# The serving limits (README "Security and limits"): flag, type, default, what it bounds.
LIMITS = [
    ("--max-run-pixels", int, 2048 * 2048, "N x H x W one KServe request may give the engine "
     "(413 above it); /v1/translate tiles pictures beyond it"),
    ("--max-connections", int, 512, "open connections and requests at once; more get 503"),
    ("--header-timeout-s", float, 10.0, "a request's line and headers must arrive within this"),
    ("--body-timeout-s", float, 60.0, "a request's body must arrive within this (408 after)"),
    ("--keep-alive-s", float, 5.0, "idle keep-alive connections are closed after this"),
    ("--max-inflight-mb", float, 512.0, "request bodies held at once, in all; more get 503"),
    ("--drain-s", float, 1.0, "on SIGTERM: time to read requests already sent before "
     "shutting down"),
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2i-serve", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Serve an i2i model or translate a folder.")
    p.add_argument("--export", type=Path, help="an i2i-export folder (with manifest.json)")
    p.add_argument("--checkpoint", type=Path, help="an i2i checkpoint (.safetensors)")
    p.add_argument("--engine", help="eager, fused, onnxruntime, openvino, tensorrt, aoti, or "
                                    "auto: the fastest artifact of --export that passed its "
                                    "parity gate and opens here (default: onnxruntime with "
                                    "--export, eager with --checkpoint); several, comma-"
                                    "separated (onnxruntime,openvino), to compare them: "
                                    "/v1/translate?engine=NAME and the page pick one, KServe "
                                    "v2 and gRPC serve the first")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                   help="auto: fp16 for fused on a GPU and for tensorrt, fp32 otherwise (with "
                        "--engine auto: any); bf16: eager, fused, openvino; int8: onnxruntime, "
                        "openvino, tensorrt")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, help="also serve KServe v2 gRPC (tritonclient.grpc, "
                   "perf_analyzer) on this port, at --host; needs grpcio and tritonclient[grpc]")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--timeout-ms", type=float, default=30_000.0)
    p.add_argument("--api-key", default=os.environ.get("I2I_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $I2I_API_KEY, if set)")
    p.add_argument("--max-body-mb", type=float, default=64.0)
    p.add_argument("--max-pixels", type=int, default=4096 * 4096,
                   help="pictures with more pixels are refused before decoding (413)")
    for flag, kind, default, text in LIMITS:
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument("--input-dir", type=Path, help="translate this folder instead of serving "
                                                  "(the same as i2i-translate)")
    p.add_argument("--output-dir", type=Path, help="where --input-dir's translations go")
    add_folder_arguments(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def engine_names(args) -> list[str]:
    """--engine as a list of names: one, or several comma-separated (never auto among them)."""
    if not args.export and not args.checkpoint:
        raise ValueError("give --export DIR or --checkpoint PATH")
    names = [n.strip() for n in (args.engine or "").split(",")] if args.engine else [
        "onnxruntime" if args.export else "eager"]
    if len(names) > 1:
        if "auto" in names or "" in names:
            raise ValueError(f"--engine {args.engine!r}: list engines by name, e.g. "
                             "onnxruntime,openvino (auto chooses one engine; use it alone)")
        if len(set(names)) < len(names):
            raise ValueError(f"--engine {args.engine!r} names an engine twice; name each once")
        if args.input_dir:
            raise ValueError("--input-dir translates with one engine; give --engine one name")
    return names


def open_from_args(args) -> list:
    """The engines --engine names, opened, in order."""
    from ..engines import open_engine
    return [open_engine(name, export_dir=args.export, checkpoint=args.checkpoint,
                        device=args.device, precision=args.precision,
                        max_batch_size=args.max_batch) for name in engine_names(args)]


def check_grpc(args) -> None:
    """--grpc-port: a usable port, and the gRPC packages installed."""
    if args.input_dir:
        raise ValueError("--grpc-port goes with serving; leave it out with --input-dir")
    if not 0 < args.grpc_port < 65536 or args.grpc_port == args.port:
        raise ValueError(f"--grpc-port must be a port from 1 to 65535 other than --port "
                         f"({args.port}), got {args.grpc_port}")
    try:
        import grpc  # noqa: F401
        from tritonclient.grpc import service_pb2_grpc  # noqa: F401
    except ImportError as err:
        raise ValueError(f"--grpc-port needs grpcio and tritonclient[grpc] ({err}); install "
                         "them with: pip install 'i2i[grpc]'") from err


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from ..models import CheckpointError
    try:
        if bool(args.input_dir) != bool(args.output_dir):
            raise ValueError("--input-dir and --output-dir go together")
        if (args.exemplar or args.pictures) and not args.input_dir:
            flag = "--exemplar" if args.exemplar else "--input"
            raise ValueError(f"{flag} goes with --input-dir; a served model takes its pictures "
                             "with each request")
        if args.mask and not args.input_dir:
            raise ValueError("--mask goes with --input-dir; a served model takes its mask with "
                             "each request (a mask file, or ?mask=SCHEME on /v1/translate)")
        if args.grpc_port is not None:
            check_grpc(args)
        engine, *more = open_from_args(args)
        if args.input_dir:
            folder_options(args, args.max_batch)     # bad NAME=VALUE pairs fail before work
    except (ValueError, FileNotFoundError, RuntimeError, CheckpointError) as err:
        print(f"i2i-serve: error: {err}", file=sys.stderr)
        return 2
    if args.input_dir:
        return run_folder(engine, args.input_dir, args.output_dir,
                          folder_options(args, min(args.max_batch, 16)), "i2i-serve")
    from .server import ServerConfig, create_app
    from .serving import Limits, serve
    config = ServerConfig(max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                          max_queue=args.max_queue, timeout_ms=args.timeout_ms,
                          api_key=args.api_key, max_body_bytes=int(args.max_body_mb * 2**20),
                          max_pixels=args.max_pixels, max_run_pixels=args.max_run_pixels,
                          body_timeout_s=args.body_timeout_s,
                          max_inflight_bytes=int(args.max_inflight_mb * 2**20),
                          grpc_port=args.grpc_port, grpc_host=args.host)
    app = create_app(engine, config, more)
    chosen = f"; {engine.spec.choice}" if engine.spec.choice else ""
    grpc = f" and grpc://{args.host}:{args.grpc_port}" if args.grpc_port is not None else ""
    others = "".join(f", {e.name} {e.spec.precision}" for e in more)
    print(f"serving {engine.spec.model} ({engine.name} {engine.spec.precision}{chosen}{others}) "
          f"on http://{args.host}:{args.port}{grpc}; the page: http://{args.host}:{args.port}/",
          flush=True)
    # On SIGTERM/SIGINT the server stops accepting, reads the requests already sent, lets
    # running requests finish, then runs the app's shutdown, which drains the batcher's queue
    # (serving.py). Afterwards uvicorn re-raises the signal it caught; this handler turns that
    # SIGTERM into a clean exit 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(app, args.host, args.port, Limits(args.max_connections, args.header_timeout_s,
                                            args.keep_alive_s, args.drain_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
