import pytest
from svg2.diffusers import build_tiny_pipeline, load_pipeline


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """kind -> directory of a tiny random pipeline written once per test session."""
    return {}


@pytest.fixture(scope="session")
def tiny(tiny_dirs, tmp_path_factory):
    pipes = {}

    def get(kind):
        if kind not in pipes:
            path = build_tiny_pipeline(kind, tmp_path_factory.mktemp(kind), seed=0)
            tiny_dirs[kind] = path
            pipes[kind] = load_pipeline(kind, path)
        return pipes[kind]

    return get
