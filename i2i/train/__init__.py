"""Training core: data, losses, the loop and i2i-train."""
