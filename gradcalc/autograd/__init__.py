"""PyTorch-style autograd functions."""
