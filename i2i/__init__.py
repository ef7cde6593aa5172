"""i2i: optimized inference and export for mask-based image-to-image translation.

    import i2i
    out = i2i.translate("cat.jpg", model="exports/additive")     # a PIL image at its own size
    model = i2i.open("exports/additive")                          # the engine stays loaded

The API (i2i.api) is imported on first use, so `import i2i.models` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "open", "translate", "__version__"]

if TYPE_CHECKING:
    from .api import Model, open, translate


def __getattr__(name: str) -> Any:
    if name in ("Model", "open", "translate"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'i2i' has no attribute {name!r}")
