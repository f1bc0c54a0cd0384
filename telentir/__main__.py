"""`python -m telentir …`: the admin CLI."""

from .cli import main

main()
