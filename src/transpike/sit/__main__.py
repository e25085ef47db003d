"""``python -m transpike.sit fit ...``: reproduce the shipped SI-exp parameters."""

from .fit import main

main()
