"""Evaluation: measurements of trained translators.

Against the synthetic data's known answers (imports i2i.data and i2i.models): shapes (mask area
and squareness on held-out circles -> squares), exemplars (locality, mask IoU and attribute
transfer on the attribute scenes), masked (change inside vs outside a mask, diversity across
masks).

Against target pictures, for any data: features (the feature networks: the FID Inception-v3 of
inception.py and a seeded tiny net), distribution (FID, KID, k-NN precision and recall),
paired (pixel accuracy, PSNR, SSIM), pictures (folders, A|B halves, a model's translations),
compare (one report) and cli (i2i-eval; it opens models through i2i.api). Nothing here imports
i2i.train.
"""
