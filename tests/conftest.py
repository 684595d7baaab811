"""Shared fixtures: the real data folder (integration tests skip cleanly when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """``$LOWDOSE_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("LOWDOSE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    return root


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread (the CI machine has two cores, shared by the test run)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
