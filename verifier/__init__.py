"""lineage: weight-level training-lineage verification for language models."""

import os
from importlib.metadata import PackageNotFoundError, version

# See backends/__init__.py: keep a broken torch_npu install from breaking `import torch`.
os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")

try:
    __version__ = version("lineage")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
