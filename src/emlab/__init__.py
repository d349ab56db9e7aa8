"""emlab: train, evaluate and analyse emergent-misalignment model organisms."""

from emlab.errors import EmlabError

__version__ = "0.1.0"
__all__ = ["EmlabError", "__version__"]
