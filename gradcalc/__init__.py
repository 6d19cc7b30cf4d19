"""gradcalc: a reverse-mode autograd engine on NumPy with PyTorch's names."""
