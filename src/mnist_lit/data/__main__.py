"""``python -m mnist_lit.data [--data-dir DIR] [--dataset NAME]``: fetch and verify a data set.

The data sets are the options of ``conf/data/``: each names its data module, whose ``spec``
says what to fetch. ``make data`` runs this.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from mnist_lit.data.download import datasets, ensure_dataset
from mnist_lit.errors import reported_errors


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch and verify a data set into <data-dir>/<its folder>/raw."""
    known = datasets()
    parser = argparse.ArgumentParser(prog="python -m mnist_lit.data", description=main.__doc__)
    parser.add_argument("--data-dir", default="data", help="data root (default: %(default)s)")
    parser.add_argument(
        "--dataset", default="mnist", choices=sorted(known), help="(default: %(default)s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = known[args.dataset]
    raw_dir = Path(args.data_dir) / spec.raw_subdir
    with reported_errors():
        ensure_dataset(spec, raw_dir)
    print(f"{spec.title} is ready in {raw_dir} (4 files, md5 verified)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
