"""i2i: an inference engine and export toolchain for mask-based image-to-image translation."""

__version__ = "0.1.0"
