"""The files Vercel and Azure Functions read, as their runtimes use them (the runs themselves:
tests/integration/test_vercel.py and test_azure_functions.py)."""

from __future__ import annotations

import importlib
import json
import tomllib

import azure.functions as func
from fastapi import FastAPI

from tests.support import ROOT
from tests.support.azure import http_function

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_vercels_entrypoint_is_the_kits_app():
    module, _, variable = PYPROJECT["tool"]["vercel"]["entrypoint"].partition(":")
    app = getattr(importlib.import_module(module), variable)
    assert isinstance(app, FastAPI)
    from api.main import app as kit_app

    assert app is kit_app, "the same app, not a copy to keep in step"


def test_azures_host_keeps_the_apps_paths_and_one_function_takes_them_all():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == "", "else every path gains /api"
    function = http_function()
    (trigger,) = [b for b in function.get_bindings_dict()["bindings"] if b["type"] == "httpTrigger"]
    assert trigger["route"] == "/{*route}"
    assert trigger["authLevel"] == func.AuthLevel.ANONYMOUS, "the app checks its own tokens"


def _patterns(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_no_secret_is_uploaded_to_either_platform():
    # Vercel's: an allow-list (everything, then the app's files back); Azure's: a deny-list.
    vercel = _patterns(".vercelignore")
    assert vercel[0] == "/*"
    assert not [p for p in vercel if p.startswith("!") and ("env" in p or "secret" in p)]
    azure = _patterns(".funcignore")
    assert {".env", ".env.*", "/secrets/", "/secrets.*/", "deploy.env"} <= set(azure)
