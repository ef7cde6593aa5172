"""Training: the recipe registry (one file per objective), losses, the loop and i2i-train."""
