"""Shared test fixtures."""

from __future__ import annotations

import os

import pytest

#: In CI (REQUIRE_SERVICES=1) a test that needs PostgreSQL or Redis fails when the service is
#: missing; on a developer machine it is skipped with the reason.
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def need_service(reason: str) -> None:
    """Skip (or, in CI, fail) the calling test because a service it needs is unavailable."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _stop_emulated_calls_at_the_end():
    """Calls placed through the emulated carrier ring in the background (calls/emulator/exchange.py);
    end the ones still running before the session's output streams close."""
    yield
    from calls.emulator.exchange import close_exchange

    close_exchange()
