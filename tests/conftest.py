"""Shared fixtures: one small real-text dataset built in-process, once per test session."""

import os
import tempfile
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
TEXT = FIXTURES / "text"

# Hermetic: the base-model cache and the data root live in a throwaway directory, never in ~/.cache.
_SCRATCH = tempfile.mkdtemp(prefix="golf-tests-")
os.environ["GOLF_CACHE"] = os.path.join(_SCRATCH, "cache")
os.environ["GOLF_DATA"] = os.path.join(_SCRATCH, "data")

torch.set_num_threads(1)  # CI has 2 cores; tests are small and deterministic on one


@pytest.fixture(scope="session")
def text_dir() -> Path:
    return TEXT


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Moby Dick chapters + two Lincoln addresses -> sp512 dataset, 4 validation documents."""
    from golf.data.build import build_dataset

    out = tmp_path_factory.mktemp("data") / "tiny_sp512"
    return build_dataset([TEXT], vocab_size=512, out=out, val_docs=4, name="tiny", shard_tokens=40_000)
