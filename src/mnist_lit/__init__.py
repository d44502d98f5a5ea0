"""mnist-lit: a PyTorch Lightning + Hydra research template for MNIST classification."""

__version__ = "0.1.0"
