"""``python -m cxrlib ...`` is the same as the ``cxrlib`` console script."""
from cxrlib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
