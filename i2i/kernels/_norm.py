"""The instance-norm engine behind instance_norm_act and instance_norm_hadain.

Each (n, c) plane of x (N, C, H, W) is one row of H*W elements. Statistics are accumulated in
fp32 whatever the input dtype, by two passes over registers (short rows) or by Chan's parallel
merge of per-tile (count, mean, M2) (long rows), so fp16 activations in the hundreds stay
accurate. Every row is first shifted by its own first element: sums of (x - x0) stay small, so
a row with a large mean and a small variance loses nothing to the rounding of its mean. Every
element is addressed through the tensor's own strides with int64 offsets, so NCHW and
channels_last inputs are both read right.

Two paths:
- row path (H*W <= MAX_ROW_BLOCK): one program per row holds the row in registers: one read,
  one write.
- split path (long rows, or too few rows to fill a GPU): each row is cut into chunks; a stats
  kernel writes one (count, mean, M2) triple per chunk, an apply kernel merges the row's triples
  and normalises its chunk. Rows of any length work.

The epilogue after normalisation is shared: per-channel affine, ReLU, residual add
(instance_norm_act) or the HAdaIN foreground/background blend under a mask.
"""

from __future__ import annotations

import torch

from ._triton import check_device, check_float, interpreting, jit, next_power_of_2, tl, triton

MAX_ROW_BLOCK = 8192        # longest row normalised from registers by one program
SPLIT_CHUNK = 4096          # elements per program on the split path (GPU)
SPLIT_BLOCK = 1024          # tile those programs loop over (GPU)
INTERPRETER_CHUNK = 16384   # the interpreter pays per program and per loop turn: few, large tiles


@jit
def _epilogue(xn, n, c, h, w, valid, C,
              w_ptr, b_ptr, w2_ptr, b2_ptr,           # affine (C,) or HAdaIN gammas/betas (N, C)
              r_ptr, srn, src, srh, srw,               # residual (N, C, H, W) and its strides
              m_ptr, smn, smh, smw,                    # HAdaIN mask (N, 1, H, W) and its strides
              HAS_W: tl.constexpr, HAS_B: tl.constexpr, RELU: tl.constexpr,
              HAS_RES: tl.constexpr, HADAIN: tl.constexpr):
    # xn: normalised fp32 tile; n, c: int64 scalars; h, w: int64 tile coordinates.
    if HADAIN:
        p = n * C + c
        m = tl.load(m_ptr + n * smn + h * smh + w * smw, mask=valid, other=0.0).to(tl.float32)
        fg = tl.load(w_ptr + p).to(tl.float32) * xn + tl.load(b_ptr + p).to(tl.float32)
        bg = tl.load(w2_ptr + p).to(tl.float32) * xn + tl.load(b2_ptr + p).to(tl.float32)
        y = m * fg + (1.0 - m) * bg
    else:
        y = xn
        if HAS_W:
            y = y * tl.load(w_ptr + c).to(tl.float32)
        if HAS_B:
            y = y + tl.load(b_ptr + c).to(tl.float32)
        if RELU:
            y = tl.maximum(y, 0.0)
        if HAS_RES:
            r = tl.load(r_ptr + n * srn + c * src + h * srh + w * srw, mask=valid, other=0.0)
            y = y + r.to(tl.float32)
    return y


@jit
def _load_tile(x_ptr, n, c, start, W, HW, sxn, sxc, sxh, sxw, BLOCK: tl.constexpr):
    # The BLOCK elements of row (n, c) from position `start` of the row on: their validity,
    # their int64 (h, w) coordinates and their values as stored (masked lanes read 0).
    offs = start + tl.arange(0, BLOCK)
    valid = offs < HW
    h = (offs // W).to(tl.int64)
    w = (offs % W).to(tl.int64)
    x = tl.load(x_ptr + n * sxn + c * sxc + h * sxh + w * sxw, mask=valid, other=0.0)
    return valid, h, w, x


@jit
def _row_kernel(x_ptr, o_ptr,                 # input and output, (N, C, H, W), any strides
                C, W, HW, sxn, sxc, sxh, sxw, son, soc, soh, sow, eps,
                w_ptr, b_ptr, w2_ptr, b2_ptr, r_ptr, srn, src, srh, srw, m_ptr, smn, smh, smw,
                BLOCK: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                RELU: tl.constexpr, HAS_RES: tl.constexpr, HADAIN: tl.constexpr):
    row = tl.program_id(0)
    n = (row // C).to(tl.int64)
    c = (row % C).to(tl.int64)
    shift = tl.load(x_ptr + n * sxn + c * sxc).to(tl.float32)        # the row's first element
    valid, h, w, x = _load_tile(x_ptr, n, c, 0, W, HW, sxn, sxc, sxh, sxw, BLOCK)
    x = tl.where(valid, x.to(tl.float32) - shift, 0.0)   # fp32 before any arithmetic (bf16)
    mean = tl.sum(x, axis=0) / HW                         # of x - shift
    d = tl.where(valid, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / HW + eps)
    y = _epilogue(d * rstd, n, c, h, w, valid, C, w_ptr, b_ptr, w2_ptr, b2_ptr,
                  r_ptr, srn, src, srh, srw, m_ptr, smn, smh, smw,
                  HAS_W, HAS_B, RELU, HAS_RES, HADAIN)
    tl.store(o_ptr + n * son + c * soc + h * soh + w * sow, y.to(o_ptr.dtype.element_ty),
             mask=valid)


@jit
def _stats_kernel(x_ptr,                          # input (N, C, H, W), any strides
                  cnt_ptr, mean_ptr, m2_ptr,      # fp32 (rows * SPLITS,) partial statistics
                  C, W, HW, sxn, sxc, sxh, sxw, SPLITS,
                  CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    s = tl.program_id(1)
    n = (row // C).to(tl.int64)
    c = (row % C).to(tl.int64)
    shift = tl.load(x_ptr + n * sxn + c * sxc).to(tl.float32)        # the row's first element
    count = tl.full((), 0.0, tl.float32)
    mean = tl.full((), 0.0, tl.float32)
    m2 = tl.full((), 0.0, tl.float32)
    for i in range(0, CHUNK, BLOCK):
        valid, h, w, x = _load_tile(x_ptr, n, c, s * CHUNK + i, W, HW, sxn, sxc, sxh, sxw,
                                    BLOCK)
        x = tl.where(valid, x.to(tl.float32) - shift, 0.0)
        k = tl.sum(valid.to(tl.float32), axis=0)
        tile_mean = tl.sum(x, axis=0) / tl.maximum(k, 1.0)
        d = tl.where(valid, x - tile_mean, 0.0)
        # Chan et al.: merge the tile's (k, mean, M2) into the running triple.
        total = count + k
        delta = tile_mean - mean
        frac = k / tl.maximum(total, 1.0)
        mean = mean + delta * frac
        m2 = m2 + tl.sum(d * d, axis=0) + delta * delta * count * frac
        count = total
    slot = row.to(tl.int64) * SPLITS + s
    tl.store(cnt_ptr + slot, count)
    tl.store(mean_ptr + slot, mean)
    tl.store(m2_ptr + slot, m2)


@jit
def _apply_kernel(x_ptr, o_ptr, cnt_ptr, mean_ptr, m2_ptr,
                  C, W, HW, sxn, sxc, sxh, sxw, son, soc, soh, sow, eps, SPLITS,
                  w_ptr, b_ptr, w2_ptr, b2_ptr, r_ptr, srn, src, srh, srw, m_ptr, smn, smh, smw,
                  SPLITS_P2: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
                  HAS_W: tl.constexpr, HAS_B: tl.constexpr, RELU: tl.constexpr,
                  HAS_RES: tl.constexpr, HADAIN: tl.constexpr):
    row = tl.program_id(0)
    s = tl.program_id(1)
    n = (row // C).to(tl.int64)
    c = (row % C).to(tl.int64)
    parts = tl.arange(0, SPLITS_P2)
    present = parts < SPLITS
    base = row.to(tl.int64) * SPLITS
    k = tl.load(cnt_ptr + base + parts, mask=present, other=0.0)
    mu = tl.load(mean_ptr + base + parts, mask=present, other=0.0)
    q = tl.load(m2_ptr + base + parts, mask=present, other=0.0)
    shift = tl.load(x_ptr + n * sxn + c * sxc).to(tl.float32)        # as in _stats_kernel
    total = tl.sum(k, axis=0)
    mean = tl.sum(k * mu, axis=0) / total                 # of x - shift
    spread = mu - mean
    rstd = 1.0 / tl.sqrt(tl.sum(q + k * spread * spread, axis=0) / total + eps)
    for i in range(0, CHUNK, BLOCK):
        valid, h, w, x = _load_tile(x_ptr, n, c, s * CHUNK + i, W, HW, sxn, sxc, sxh, sxw,
                                    BLOCK)
        xn = ((x.to(tl.float32) - shift) - mean) * rstd
        y = _epilogue(xn, n, c, h, w, valid, C, w_ptr, b_ptr, w2_ptr, b2_ptr,
                      r_ptr, srn, src, srh, srw, m_ptr, smn, smh, smw,
                      HAS_W, HAS_B, RELU, HAS_RES, HADAIN)
        tl.store(o_ptr + n * son + c * soc + h * soh + w * sow, y.to(o_ptr.dtype.element_ty),
                 mask=valid)


def check_x(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    check_float("x", x)


def check_like(name: str, t: torch.Tensor, shape: tuple[int, ...], x: torch.Tensor) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    check_float(name, t)
    check_device(name, t, x)


def _split_plan(rows: int, hw: int, x: torch.Tensor, chunk: int | None,
                block: int | None) -> tuple[int, int] | None:
    """(chunk, block) for the split path, or None for the row path."""
    if chunk is not None:
        return chunk, block or chunk
    if interpreting() and x.device.type == "cpu":
        return (INTERPRETER_CHUNK, INTERPRETER_CHUNK) if hw > MAX_ROW_BLOCK else None
    few_rows = rows < 2 * torch.cuda.get_device_properties(x.device).multi_processor_count
    if hw > MAX_ROW_BLOCK or (few_rows and hw >= 2 * SPLIT_CHUNK):
        return SPLIT_CHUNK, SPLIT_BLOCK
    return None


def launch(x: torch.Tensor, eps: float, *, weight: torch.Tensor | None = None,
           bias: torch.Tensor | None = None, relu: bool = False,
           residual: torch.Tensor | None = None,
           hadain: tuple[torch.Tensor, ...] | None = None,
           chunk: int | None = None, block: int | None = None) -> torch.Tensor:
    """Run the fused instance norm. `hadain` = (mask, gamma_fg, beta_fg, gamma_bg, beta_bg),
    already checked by the caller. `chunk`/`block` force the split path (tests use it)."""
    if triton is None:
        raise RuntimeError("triton is not installed; install i2i[dev] or a CUDA build of torch")
    N, C, H, W = x.shape
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    rows, hw = N * C, H * W
    dummy = x
    w_, b_ = weight if weight is not None else dummy, bias if bias is not None else dummy
    w2_ = b2_ = m_ = dummy
    if hadain is not None:
        m_, w_, b_, w2_, b2_ = hadain
    r_ = residual if residual is not None else dummy
    epilogue = (w_, b_, w2_, b2_, r_, *_strides(r_), m_, m_.stride(0), m_.stride(2),
                m_.stride(3))
    flags = dict(HAS_W=weight is not None, HAS_B=bias is not None, RELU=bool(relu),
                 HAS_RES=residual is not None, HADAIN=hadain is not None)
    plan = _split_plan(rows, hw, x, chunk, block)
    if plan is None:
        size = next_power_of_2(hw)
        _row_kernel[(rows,)](x, out, C, W, hw, *_strides(x), *_strides(out), eps, *epilogue,
                             BLOCK=size, num_warps=8 if size >= 2048 else 4, **flags)
        return out
    chunk_, block_ = plan
    splits = -(-hw // chunk_)
    partial = torch.empty((3, rows * splits), dtype=torch.float32, device=x.device)
    _stats_kernel[(rows, splits)](x, partial[0], partial[1], partial[2], C, W, hw,
                                  *_strides(x), splits, CHUNK=chunk_, BLOCK=block_)
    _apply_kernel[(rows, splits)](x, out, partial[0], partial[1], partial[2], C, W, hw,
                                  *_strides(x), *_strides(out), eps, splits, *epilogue,
                                  SPLITS_P2=next_power_of_2(splits), CHUNK=chunk_,
                                  BLOCK=block_, num_warps=4, **flags)
    return out


def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    if t.dim() != 4:
        return (0, 0, 0, 0)
    return tuple(t.stride())
