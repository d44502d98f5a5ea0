"""``python -m mnist_lit.data [--data-dir DIR] [--dataset NAME]``: fetch and verify a data set.

What ``make data`` runs (and the ``mnist-data`` command). It lives here, not in ``download.py``,
because it needs every data set registered, that is the whole package imported.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from mnist_lit.data import DATASETS, ensure_dataset
from mnist_lit.errors import reported_errors


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch and verify a data set into <data-dir>/<its folder>/raw."""
    parser = argparse.ArgumentParser(prog="python -m mnist_lit.data", description=main.__doc__)
    parser.add_argument("--data-dir", default="data", help="data root (default: %(default)s)")
    parser.add_argument(
        "--dataset", default="mnist", choices=sorted(DATASETS), help="(default: %(default)s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = DATASETS[args.dataset]
    raw_dir = Path(args.data_dir) / spec.raw_subdir
    with reported_errors():
        ensure_dataset(spec, raw_dir)
    print(f"{spec.title} is ready in {raw_dir} (4 files, md5 verified)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
