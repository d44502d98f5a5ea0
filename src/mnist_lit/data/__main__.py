"""``python -m mnist_lit.data [--data-dir DIR]``: fetch and verify MNIST (what `make data` runs)."""

import sys

from mnist_lit.data.sources import main

sys.exit(main())
