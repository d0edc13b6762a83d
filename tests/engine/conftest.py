import pytest

from models import load_tokenizer, save_tiny_opt
from opt_desktop.engine import EngineService, LoadRequest


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session", params=["pre", "post"])
def family(request):
    return request.param


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, family, tokenizer):
    """A saved tiny OPT of each family (pre-LN like 125m, post-LN + project_in/out like 350m)."""
    return save_tiny_opt(tmp_path_factory.mktemp(f"opt-{family}"), family, tokenizer)


@pytest.fixture(scope="session")
def engine(checkpoint):
    """An engine with the checkpoint loaded through the real loading code."""
    svc = EngineService()
    svc.load(LoadRequest(source=str(checkpoint), device="cpu")).result()
    yield svc
    svc.shutdown()
    assert svc.join(5.0)  # its worker ended (other session fixtures' engines may still be alive)
