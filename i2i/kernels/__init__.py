"""Custom Triton kernels (fused instance norm, HAdaIN blend, add-mask-and-clamp)."""
