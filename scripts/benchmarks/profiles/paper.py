"""``make bench PROFILE=paper``: DISSect where the paper says it wins, with seeds and intervals.

The design below was fixed before any of its results were seen; do not change it to favour a
method (add a new profile instead).

- Regimes (synthetic pairs, 40% noisy; the clean test split has 500 images x 5 captions):
  ``memorising-shuffle`` and ``memorising-partial``: 1,000 pairs, batch 128, 40 epochs, where full
  data peaks and then memorises the noise (the report states the peak epoch, the peak and the
  decline); ``learning``: 6,000 pairs, batch 256, 4 epochs, still learning at the end.
- Seeds 0, 1, 2: each seed draws its own data set and initialisation; every method sees the same
  data per seed, so differences against ``random`` are paired.
- Ratio r = 0.5. Methods: ``full`` (``--selection observe``: trains on everything and records
  every score), ``random``, ``dissect-warmup`` with the authors' fixed warm-up (a quarter of the
  epochs: 10 of 40), ``dissect-warmup`` with an ``auto`` warm-up, ``dissect-mome`` (no warm-up,
  the paper's variant) and ``dissect-mome`` gated by ``auto``.
- The three detectors of ``auto`` are compared on ``memorising-shuffle`` (each one named). The
  default of ``--dissect-auto-signal`` is then chosen on those numbers, and
  ``memorising-partial`` and ``learning`` run ``auto`` with that default: a held-out check of the
  choice. Each run's JSON records the signal it used.
- Retrieval R@sum every 2 epochs in the memorising regimes (every epoch in ``learning``) and after
  the last one.
- Cost: 60 runs, about 2 hours on 2 CPU cores (measured 2026-12-01: ``memorising-shuffle`` first,
  about 1 hour).

Each run's results are cached in ``runs/<name>.json``: an interrupted bench resumes where it
stopped, and the report covers whatever has finished. Runs use one thread each and
``parallel`` of them at a time (accuracy does not depend on timing; the wall-clock columns of
this profile are not comparable across runs).
"""

# The design as data: the machinery (runner, analysis, report) lives in the modules beside this
# package; nothing here may change (the profile is frozen).

MEMORISING = dict(train=1000, test=500, epochs=40, batch=128, val_every=2)
AUTO = ["--dissect-warmup-epochs", "auto"]
MOME_AUTO = ["--dissect-mome-warmup-epochs", "auto"]
# label: (strategy, extra flags); "{fixed}" is a quarter of the regime's epochs
METHODS = {
    "full": ("observe", []),
    "random": ("random", []),
    "dissect-warmup-fixed": ("dissect-warmup", ["--dissect-warmup-epochs", "{fixed}"]),
    "dissect-warmup-auto": ("dissect-warmup", AUTO),  # the default signal
    "dissect-warmup-auto-spread": ("dissect-warmup", AUTO + ["--dissect-auto-signal", "spread"]),
    "dissect-warmup-auto-loss": ("dissect-warmup", AUTO + ["--dissect-auto-signal", "loss"]),
    "dissect-warmup-auto-retrieval": ("dissect-warmup", AUTO + ["--dissect-auto-signal", "retrieval"]),
    "dissect-mome": ("dissect-mome", []),
    "dissect-mome-auto": ("dissect-mome", MOME_AUTO),  # the default signal
    "dissect-mome-auto-spread": ("dissect-mome", MOME_AUTO + ["--dissect-auto-signal", "spread"]),
}
# In order of priority: the runs go method by method (all seeds), regime by regime.
COMPARE_DETECTORS = (
    "full",
    "random",
    "dissect-warmup-fixed",
    "dissect-warmup-auto-retrieval",
    "dissect-mome",
    "dissect-warmup-auto-spread",
    "dissect-warmup-auto-loss",
    "dissect-mome-auto-spread",
)
HELD_OUT = ("full", "random", "dissect-warmup-fixed", "dissect-warmup-auto", "dissect-mome", "dissect-mome-auto")
PAPER = dict(
    regimes={
        "memorising-shuffle": dict(MEMORISING, noise="shuffle", methods=COMPARE_DETECTORS),
        "memorising-partial": dict(MEMORISING, noise="partial", methods=HELD_OUT),
        "learning": dict(train=6000, test=500, noise="shuffle", epochs=4, batch=256, val_every=1, methods=HELD_OUT),
    },
    seeds=(0, 1, 2),
    ratio=0.5,
    noise_rate=0.4,
    model="dissect-vit-tiny",
    lr=1e-3,
    parallel=2,
    methods=METHODS,
    recorded=("full", "random"),  # --selection-record: the per-sample scores of Fig. 3
    # Dated notes the report opens with (one quoted paragraph a note, lines as written): what was
    # learnt about these runs after the design froze; a rebuild keeps them.
    notes=(
        (
            "**Measured with a leak (noted 2026-12-02).** Every `auto` row with the `retrieval` signal below",
            "(`dissect-warmup-auto-retrieval`, `dissect-warmup-auto (retrieval)`, `dissect-mome-auto",
            "(retrieval)`) watched `--retrieval-data`, the same test split whose R@sum this report ranks: the",
            "detector chose its switching epoch by looking at the reported numbers, an advantage no other",
            "method had. The product no longer allows it (the detector reads `--val-data` only), and the",
            "`web` profile (docs/web_bench/) re-ran `dissect-warmup-auto` on `memorising-shuffle` with a",
            "separate validation split: 77.8 ± 21.6 (switch at epochs 32, 34, 8) against 76.8 ± 20.1 below",
            "(36, 34, 8), seeds 1 and 2 identical, so the leak bought nothing measurable there",
            "([benchmarks](../benchmarks.md#the-continuity-regime-memorising-shuffle)). The rest of this",
            "report is unaffected; its design stays frozen.",
        ),
    ),
)
