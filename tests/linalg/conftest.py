import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The test matrices are tiny; on a busy 2-core machine OpenMP hand-offs cost more than the math."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
