import os
import shutil

# Kernel tests run the Triton kernels themselves through the interpreter on machines without a
# GPU. It must be switched on before triton is first imported. On a GPU machine the kernels run
# on the device instead (export TRITON_INTERPRET=0 to be explicit).
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

# The tests run tiny tensors: a second intra-op thread only adds OpenMP synchronisation cost
# (10x on a busy 2-core machine), so every test runs single-threaded.
torch.set_num_threads(1)
