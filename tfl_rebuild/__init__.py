"""tfl-rebuild: see inside TensorFlow Lite models, debug them layer by layer, rebuild them in Keras."""

__version__ = "0.1.0"
