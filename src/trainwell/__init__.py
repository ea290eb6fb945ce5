"""trainwell: a PyTorch training engine for research teams."""

__version__ = "0.1.0"
