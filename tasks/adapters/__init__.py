"""Model adapters: one module per model family, named by the registry's `adapter` field.

Each module exposes its `ModelAdapter` subclass as `Adapter`; `load_adapter_class(name)` finds it,
`load_adapter(spec, settings)` makes one and loads its weights.
`check_registry` holds every registry entry to its adapter's contract when a worker starts.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING

from vlmq.registry import ModelSpec, Registry, RegistryError
from vlmq.settings import Settings

if TYPE_CHECKING:
    from vlmq.tasks.adapters.base import ModelAdapter

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def load_adapter_class(name: str) -> type[ModelAdapter]:
    """The adapter class of `vlmq.tasks.adapters.<name>`; `SetupError` for an unknown or broken name."""
    from vlmq.tasks.adapters.base import ModelAdapter, SetupError

    if not _NAME.match(name) or name == "base":
        raise SetupError(f"unknown adapter {name!r}: adapters are modules of vlmq.tasks.adapters")
    module_name = f"{__name__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise SetupError(f"unknown adapter {name!r}: there is no module {module_name}") from exc
        raise SetupError(f"adapter {name!r} needs a package that is not installed: {exc}") from exc
    adapter = getattr(module, "Adapter", None)
    if not (isinstance(adapter, type) and issubclass(adapter, ModelAdapter)):
        raise SetupError(f"adapter {name!r}: {module_name} has no `Adapter` (a ModelAdapter subclass)")
    return adapter


def load_adapter(spec: ModelSpec, settings: Settings) -> ModelAdapter:
    """The spec's adapter with its weights loaded (`setup()`), from the source the settings resolve."""
    adapter = load_adapter_class(spec.adapter)(spec, spec.resolved_source(settings))
    adapter.setup()
    return adapter


def check_registry(registry: Registry) -> None:
    """Every entry's adapter exists and runs every job type the entry declares; else a `RegistryError`
    naming the entry (at start, not at its first job)."""
    from vlmq.tasks.adapters.base import SetupError

    problems = []
    for spec in registry:
        try:
            adapter = load_adapter_class(spec.adapter)
        except SetupError as exc:
            problems.append(f"model {spec.name!r}: {exc}")
            continue
        missing = [task for task in spec.tasks if task not in adapter.tasks]
        if missing:
            problems.append(f"model {spec.name!r}: adapter {spec.adapter!r} cannot run {', '.join(missing)} "
                            f"(it runs {', '.join(sorted(adapter.tasks))})")
    if problems:
        raise RegistryError("; ".join(problems))
