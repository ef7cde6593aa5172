import torch

# The tests run tiny tensors: a second intra-op thread only adds OpenMP synchronisation cost
# (10x on a busy 2-core machine), so every test runs single-threaded.
torch.set_num_threads(1)
