import torch

# Tests use small tensors: one thread avoids oversubscription on the 2-core CI machine.
torch.set_num_threads(1)
