"""Evaluation: measurements of trained translators against the synthetic data's known answers.

shapes: mask area and squareness on held-out circles -> squares; exemplars: locality, mask IoU
and attribute transfer on the attribute scenes; masked: change inside vs outside a mask and
diversity across masks. Imports i2i.data and i2i.models, never i2i.train.
"""
