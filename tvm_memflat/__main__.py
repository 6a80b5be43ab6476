"""``python -m tvm_memflat`` is the ``memflat`` command."""

import sys

from .cli import main

sys.exit(main())
