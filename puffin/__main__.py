"""``python -m puffin``: the ``puffin`` command line (see ``puffin.cli``)."""

from puffin.cli import main

if __name__ == "__main__":
    main()
