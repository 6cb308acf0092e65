import torch

# One thread: intra-op threads on (batch,)-sized coefficient ops cost more in synchronisation than they
# gain, and under any CPU contention OpenMP spin-waiting makes small ops ~100x slower.
torch.set_num_threads(1)
