"""One module per tab: each builds its widgets and wires them to the API through vlmq.client.

Every job type gets a tab (frontend/app.py, in the job types' order): the module named after the
type where there is one (`caption.py`, `vqa.py`, ...), else `generic.py`. A tab module's
`build(ctx, state, models_state)` lays it out: `state` is the tab's browser-kept last job,
`models_state` the API's model list (read on page load).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from vlmq.jobtypes import JobTypeSpec


def builder(spec: JobTypeSpec) -> Callable[..., Any]:
    """The `build` of the job type's own tab module, else the generic tab's for it."""
    try:
        module = importlib.import_module(f"{__name__}.{spec.name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{spec.name}":
            raise
        from vlmq.frontend.tabs import generic

        return functools.partial(generic.build, spec=spec)
    return module.build
