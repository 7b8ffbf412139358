"""Shared test set-up.

Test modules that work in float64 say so with a module-level ``DEFAULT_DTYPE`` (and may
call ``torch.set_default_dtype`` at import for their module-level tensors). Torch's
default dtype is process-global, so it is reset before each module is imported and set
for each test from its own module: no module's choice leaks into another's tests.
"""

import pytest
import torch


def pytest_collectstart(collector):
    if isinstance(collector, pytest.Module):
        torch.set_default_dtype(torch.float32)


@pytest.fixture(autouse=True)
def _module_default_dtype(request):
    dtype = getattr(request.module, "DEFAULT_DTYPE", torch.float32)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    yield
    torch.set_default_dtype(previous)
