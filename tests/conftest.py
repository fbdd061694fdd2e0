"""Test-wide settings."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; mujoco reads it at import

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_intra_op_thread():
    """Tests run many small tensor ops: on a shared 2-core machine extra intra-op threads only fight
    over the cores (10-80x slower seen), so the suite runs torch on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
