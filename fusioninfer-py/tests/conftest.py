import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root() -> pathlib.Path:
    return ROOT


@pytest.fixture(scope="session")
def shared() -> pathlib.Path:
    """The shared data folder; missing: skip loudly outside CI, fail under CI=true."""
    path = pathlib.Path(os.environ.get("FUSIONINFER_SHARED", ROOT.parent / "shared"))
    if not path.is_dir():
        message = f"shared data folder {path} is missing (set FUSIONINFER_SHARED)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": under CI=true this is a failure")
        print(f"\n!!!!!!!! SKIPPING: {message} !!!!!!!!")
        pytest.skip(message)
    return path
