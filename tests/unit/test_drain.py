"""`python -m api.drain on|off`, which a deploy runs in each old api container: the file it
creates is the one /health/routable looks at, DRAIN_FILE of the settings."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api import drain
from api.main import create_app
from core import settings as settings_module


@pytest.fixture
def drain_file(tmp_path, monkeypatch):
    path = tmp_path / "custom.drain"
    monkeypatch.setenv("DRAIN_FILE", str(path))
    settings_module.get_settings.cache_clear()
    yield path
    settings_module.get_settings.cache_clear()


def test_on_and_off_follow_drain_file_from_the_environment(drain_file, capsys):
    with TestClient(create_app(settings_module.get_settings())) as client:
        assert drain.main(["on"]) == 0
        assert drain_file.exists()
        assert capsys.readouterr().out.strip() == f"drain on: {drain_file}"
        assert client.get("/health/routable").status_code == 503

        assert drain.main(["off"]) == 0
        assert not drain_file.exists()
        assert client.get("/health/routable").status_code == 200
        assert drain.main(["off"]) == 0, "off when not draining is not an error"


@pytest.mark.parametrize("argv", [[], ["maybe"], ["on", "off"]])
def test_anything_else_is_a_usage_error(drain_file, argv, capsys):
    assert drain.main(argv) == 2
    assert "usage" in capsys.readouterr().err
    assert not drain_file.exists()


def test_an_unwritable_drain_file_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DRAIN_FILE", str(tmp_path / "missing-dir" / "api.drain"))
    settings_module.get_settings.cache_clear()
    try:
        assert drain.main(["on"]) == 1
    finally:
        settings_module.get_settings.cache_clear()
    assert "drain on:" in capsys.readouterr().err
