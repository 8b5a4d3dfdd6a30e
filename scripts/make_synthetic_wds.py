#!/usr/bin/env python
"""Write the synthetic noisy image-text data set; same flags as `open-clip-dissect make-data`."""

import sys

from open_clip_dissect.cli import make_data

if __name__ == "__main__":
    sys.exit(make_data(sys.argv[1:]))
