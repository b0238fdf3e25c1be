import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture()
def store(tmp_path):
    from mmiris.artifacts import ArtifactStore

    return ArtifactStore(tmp_path / "store")
