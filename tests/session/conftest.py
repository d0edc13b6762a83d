"""Tiny OPT checkpoints of both families, loaded once per test session, for real runs to save and read."""

import pytest

from models import load_tokenizer, save_tiny_opt
from opt_desktop.engine import EngineService, LoadRequest


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def engines(tmp_path_factory, tokenizer):
    """engines(family) -> an EngineService with that family's tiny checkpoint loaded (made on first use)."""
    made = {}

    def get(family: str) -> EngineService:
        if family not in made:
            folder = save_tiny_opt(tmp_path_factory.mktemp(f"session-opt-{family}"), family, tokenizer)
            svc = EngineService()
            svc.load(LoadRequest(source=str(folder), device="cpu")).result()
            made[family] = svc
        return made[family]

    yield get
    for svc in made.values():
        svc.shutdown()
        assert svc.join(5.0)  # its worker ended (other session fixtures' engines may still be alive)


@pytest.fixture(scope="session", params=["pre", "post"])
def engine(request, engines):
    """Each family in turn: pre-LN like opt-125m, post-LN with project_in/out like opt-350m."""
    return engines(request.param)


@pytest.fixture(scope="session")
def pre_engine(engines):
    return engines("pre")
