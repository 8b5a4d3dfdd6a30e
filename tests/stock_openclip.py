"""``python -m open_clip_train.main``, stock, with the tests' tiny model configs registered (as
an entry point the tests run in a fork of their server: see conftest.FORKED_MODULES)."""

import sys

from open_clip_train.main import main

from open_clip_dissect.openclip.models.configs import register_model_configs

if __name__ == "__main__":
    register_model_configs()  # only adds model configs; patches nothing of open_clip_train
    sys.exit(main(sys.argv[1:]) == -1)  # upstream's main returns -1 where its CLI would fail
