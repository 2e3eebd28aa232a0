"""The Azure Functions app's one function (function_app.py), as the host's indexing finds it."""

from __future__ import annotations

import functools

from azure.functions.decorators.function_app import Function


@functools.cache
def http_function() -> Function:
    """Indexed once: AsgiFunctionApp.get_functions() refuses a second call in one process, as
    the host calls it once per worker."""
    import function_app

    (function,) = function_app.app.get_functions()
    assert isinstance(function, Function)
    return function
