"""The gradcalc command line (installed as gradcalc.cli)."""
