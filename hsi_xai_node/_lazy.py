"""Lazy re-exports: a package's public names imported from their private modules on first use."""

from importlib import import_module


def lazy_getattr(package: str, exports: dict[str, str]):
    """A module-level `__getattr__` for `package` serving `exports` (name -> module, absolute or relative)."""
    def __getattr__(name):
        if name in exports:
            return getattr(import_module(exports[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
