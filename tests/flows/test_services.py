"""The sweep's environment defaults: telemetry off, no colour codes in logs that are not a terminal, and
nothing the user set is overridden."""

from __future__ import annotations

import io
import os

import pytest

from flows.runtime.services import QUIET_DEFAULTS, set_quiet_defaults


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clean_env(monkeypatch):
    for key in [*QUIET_DEFAULTS, "RAY_COLOR_PREFIX"]:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_a_log_file_gets_no_colour_codes_and_telemetry_is_off(clean_env):
    clean_env.setattr("sys.stderr", io.StringIO())  # stderr redirected to a file or a CI log
    set_quiet_defaults()
    assert os.environ["RAY_COLOR_PREFIX"] == "0"  # Ray then prints "(evaluate pid=1)" without ANSI codes
    assert all(os.environ[k] == v for k, v in QUIET_DEFAULTS.items())


def test_a_terminal_keeps_rays_colours(clean_env):
    clean_env.setattr("sys.stderr", Terminal())
    set_quiet_defaults()
    assert "RAY_COLOR_PREFIX" not in os.environ


def test_what_the_user_set_wins(clean_env):
    clean_env.setattr("sys.stderr", io.StringIO())
    clean_env.setenv("RAY_COLOR_PREFIX", "1")
    clean_env.setenv("RAY_USAGE_STATS_ENABLED", "1")
    set_quiet_defaults()
    assert os.environ["RAY_COLOR_PREFIX"] == "1" and os.environ["RAY_USAGE_STATS_ENABLED"] == "1"
