"""Entry point placeholder; replaced by the Typer app."""


def main() -> None:
    raise SystemExit("gradcalc CLI not built yet")
