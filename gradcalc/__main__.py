"""``python -m gradcalc``: the same as the ``gradcalc`` command."""

from gradcalc.cli.main import main

main()
