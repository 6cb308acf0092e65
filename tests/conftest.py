import os

# Triton's CPU interpreter must be chosen before anything imports triton, and torch.compile (used
# by test_compile.py, collected before test_kernels.py) imports it: decide here, before collection.
os.environ.setdefault("TRITON_INTERPRET", "1")

import torch

# One thread: intra-op threads on (batch,)-sized coefficient ops cost more in synchronisation than they
# gain, and under any CPU contention OpenMP spin-waiting makes small ops ~100x slower.
torch.set_num_threads(1)
