"""Entry point for ``python -m core``."""

import os
import sys

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) would bury the CLI's own
# progress lines on stderr; users can still set the variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
