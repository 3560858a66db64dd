"""Shared fixtures.

Real-image tests read ``../shared/data`` (or ``$MATCHER_TEST_DATA``) and skip with a clear reason
where it is absent, so a user's fresh clone still passes. Tests that must always run use the
photos that scikit-image ships inside its wheel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under the shared test data, or skip the test where it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"test data not found at {path} (set MATCHER_TEST_DATA to its folder)")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    """A 512x512 real photo bundled with scikit-image (always available)."""
    from skimage import data

    return Image.fromarray(np.asarray(data.astronaut()))


@pytest.fixture(scope="session")
def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(np.asarray(data.coffee()))


# tests.store.postgres_server: one throwaway PostgreSQL server per session (postgres_server),
# a fresh database per test (postgres_url), for every module that asks.
pytest_plugins = ["tests.service_fixtures", "tests.store.postgres_server"]

# A script that made the v1 fixture with the schema-1 code; importing it would run it.
collect_ignore = ["fixtures/make_v1_data.py", "fixtures/make_reencodings.py"]
