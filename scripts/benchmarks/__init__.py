"""The seeded benchmark profiles (``make bench PROFILE=paper|web``), one module per concern:

- ``profiles/``: the designs as data, one module a profile (``paper.py``: ``PAPER``, frozen;
  ``web.py``: ``WEB``), each with its design in its docstring; ``profiles.PROFILES`` names them,
  with their report folder and working folder;
- ``builders``: the data builders a regime names (``synthetic``: the generator, cached by its
  arguments);
- ``data``: what every benchmark shares (``scripts/bench.py`` too): the generator's data cache,
  the training command, running it and reading a finished run;
- ``plan``: the runs a design asks for (``jobs``), their names, and ``in_design``, which keeps
  every other run out of a report;
- ``cache``: the run cache, one JSON a run;
- ``runner``: training the runs into the cache, and ``calibrate``;
- ``record_measures``: calibration, lock-in and rare share from a run's per-sample records;
- ``stats``: means, paired 95% t-intervals, verdicts;
- ``analysis``: from runs to the numbers of a report;
- ``report``: ``results.md``, ``summary.json``, ``calibration.md``;
- ``plots``: the PNGs;
- ``cli``: the command line (``scripts/paper_bench.py``) and ``run_profile`` / ``run_paper``.

Imports go one way (no circle): ``profiles``, ``stats``, ``plan``, ``data`` and
``record_measures`` import nothing of the package; ``cache`` imports ``plan``; ``builders``
imports ``data`` and ``record_measures``; ``runner`` those; ``analysis`` imports ``plan`` and
``stats``; ``report`` imports ``stats``; ``plots`` imports ``analysis``; ``cli`` imports them all.
"""
