"""segkit: Hydra-configured binary segmentation experiments with Keras 3 and MLflow."""

from segkit.errors import SegkitError

__version__ = "0.1.0"
__all__ = ["SegkitError", "__version__"]
