"""Fixtures shared by the library's tests (tests/tensorllm/ and below).

Tiny random models themselves come from :mod:`tensorllm.tiny_models`; the evaluation tests add their own
fixtures in tests/tensorllm/evaluation/conftest.py.
"""

from __future__ import annotations

import pytest

from tensorllm.tiny_models import single_thread


@pytest.fixture(scope="module")
def one_thread():
    """torch on one intra-op thread for a whole module (the previous setting restored after it).

    A module asks for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``: being module-scoped and
    named by the module's mark, it is set up before the module's own module-scoped fixtures (the tiny models and
    artifacts they build), so those run on one thread too. Models this small run fastest on one thread; on a busy
    machine torch's default thread pool can be tens of times slower (see :mod:`tensorllm.tiny_models`).
    """
    with single_thread():
        yield
