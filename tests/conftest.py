"""Shared test set-up.

Test modules that work in float64 say so with a module-level ``DEFAULT_DTYPE`` (and may
call ``torch.set_default_dtype`` at import for their module-level tensors). Torch's
default dtype is process-global, so it is reset before each module is imported and set
for each test from its own module: no module's choice leaks into another's tests.
"""

import os
from pathlib import Path

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


ETHANOL_FILE = "gas_sensor_drift/ethanol_2565.csv.gz"
MNIST_FILE = "mnist/train-images-idx3-ubyte.gz"


def _find_shared_data(marker: str = ETHANOL_FILE) -> Path | None:
    """The data directory holding ``marker`` ($DEPTHACCEL_DATA_DIR, else ../shared/data
    next to the repo), or None."""
    env = os.environ.get("DEPTHACCEL_DATA_DIR", "").strip()
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    for d in ([Path(env)] if env else []) + [default]:
        if (d / marker).is_file():
            return d
    return None


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    """Point every download URL at a local folder that does not exist: no test can
    reach the network (the loaders, ``depthaccel data fetch`` and ``reproduce``'s data
    pre-flight all read these lists); download tests set their own file:// URLs."""
    from depthaccel.data import ethanol as eth
    from depthaccel.data import mnist as mn

    nowhere = (tmp_path / "no-such-mirror").as_uri()
    monkeypatch.setattr(eth, "UCI_URLS", [nowhere + "/archive.zip"])
    monkeypatch.setattr(mn, "MIRRORS", [nowhere + "/"])


@pytest.fixture
def ethanol_data_dir() -> str:
    """The data directory holding the Ethanol table ($DEPTHACCEL_DATA_DIR, else
    ../shared/data next to the repo); the test is skipped when neither has it."""
    found = _find_shared_data()
    if found is None:
        pytest.skip("Ethanol data not found")
    return str(found)


@pytest.fixture
def mnist_data_dir() -> Path:
    """The data directory holding MNIST (as ``ethanol_data_dir``); skipped without it."""
    found = _find_shared_data(MNIST_FILE)
    if found is None:
        pytest.skip("MNIST files not found (DEPTHACCEL_DATA_DIR)")
    return found


@pytest.fixture
def one_torch_thread():
    """Train with one torch thread (more were much slower on the shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) shared by the tests of this test process that need
    one (under pytest-xdist: one per worker that runs such a test; ``--dist loadgroup``
    would put them on one worker, but with pytest 9.2 / xdist 3.8 it does not group);
    skipped without Ray. Its workers cannot open any SQLite database: ``sqlite3.connect`` raises
    there (a worker_process_setup_hook), so a test that passes on it shows that the
    store was only ever opened by the driver. Shut down at the end of the session."""
    ray = pytest.importorskip("ray")
    import logging

    os.environ.pop("RAY_ADDRESS", None)

    def forbid_sqlite():  # runs in every worker process of this cluster
        import sqlite3

        def refuse(*args, **kwargs):
            raise RuntimeError("a Ray worker tried to open an SQLite database")

        sqlite3.connect = refuse

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"worker_process_setup_hook": forbid_sqlite},
    )
    try:
        yield ray
    finally:
        ray.shutdown()
