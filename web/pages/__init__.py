"""Server-rendered pages over the same services and access rules as the API."""

import importlib
import pkgutil

# Every module in this package with a `router` serves pages: adding a page area is adding
# a module, with nothing to register by hand.
PAGE_ROUTERS = [
    module.router
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
    if not info.name.startswith("_") and info.name != "base"
    for module in [importlib.import_module(f"{__name__}.{info.name}")]
    if hasattr(module, "router")
]
