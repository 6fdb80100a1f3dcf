import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The recurrence tests use many small tensors; one intra-op thread avoids OpenMP barrier
    overhead on the 2-core CI machine. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
