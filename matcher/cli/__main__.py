"""``python -m matcher.cli``: the same as the ``matcher`` command."""

from matcher.cli import main

if __name__ == "__main__":  # not when a doctest run imports this module
    main()
