"""`python -m pvc.cli` runs the same client as the `pvc` script."""

from pvc.cli.main import main

main()
