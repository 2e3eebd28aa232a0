"""Every `python -m <module>` of the kit's own that an image, a compose file, the Makefile or a
deploy script runs names a module that exists: a renamed module otherwise shows only when a
container's healthcheck fails (worker.liveness became worker.healthcheck)."""

from __future__ import annotations

import importlib.util
import re

from tests.support import ROOT

OWN = ("api", "worker", "core", "bench", "dev")
# `python -m x` in a shell line, or "python", "-m", "x" in an exec-form list.
MODULE = re.compile(r"""python3?"?,?\s+"?-m"?,?\s+"?([A-Za-z_][\w.]*)""")


def modules_run() -> dict[str, set[str]]:
    files = [ROOT / "Dockerfile", ROOT / "Makefile", *ROOT.glob("compose*.yaml")]
    files += [*ROOT.glob("deploy/**/*.sh"), *ROOT.glob("tests/compose*.yaml")]
    found: dict[str, set[str]] = {}
    for path in files:
        for module in MODULE.findall(path.read_text()):
            if module.split(".")[0] in OWN:
                found.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_module_run_exists():
    found = modules_run()
    assert {"api.healthcheck", "worker.healthcheck", "api.migrate", "api.drain"} <= set(found)
    missing = {m: files for m, files in found.items() if importlib.util.find_spec(m) is None}
    assert missing == {}


def test_the_pattern_finds_both_forms():
    text = 'CMD ["python", "-m", "worker.healthcheck"]\n\tdocker exec c python -m api.drain on'
    assert MODULE.findall(text) == ["worker.healthcheck", "api.drain"]
