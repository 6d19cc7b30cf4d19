"""The formula grammar (installed as gradcalc.grammar)."""
