"""``python -m runstate.cli``: the same as the ``runstate`` console script."""

from ._app import main

main()
