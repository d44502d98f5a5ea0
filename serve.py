"""Run from the repo root: ``python serve.py ckpt_path=<checkpoint | run dir | last | file.onnx>``
(see ``python serve.py --help``)."""

import sys
from pathlib import Path

# works before `pip install -e .` too: the package lives in src/
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from mnist_lit.commands import serve as main

if __name__ == "__main__":
    main()
