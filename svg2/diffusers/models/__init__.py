"""One module per model family; each registers its ``ModelSpec``s (``svg2.diffusers.spec``). Adding a module
here (and a ``conf/model/<name>.yaml``) is all a new model needs."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
