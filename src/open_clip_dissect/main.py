"""``python -m open_clip_dissect.main``: the drop-in for ``python -m open_clip_train.main``.
The entry point lives in ``open_clip_dissect.openclip.launch.main``."""

import sys

from open_clip_dissect.openclip.launch.main import main

if __name__ == "__main__":
    sys.exit(main())
