"""Data: synthetic shapes and attribute scenes, mask schemes, image folders, and the one dispatch
from a data spec or description to a dataset (open_data, domain_samples).

Imports only i2i.models and the pixel helpers; training, evaluation and export import it.
"""

from .batch import BatchData, DataError
from .open import domain_samples, open_data

__all__ = ["BatchData", "DataError", "domain_samples", "open_data"]
