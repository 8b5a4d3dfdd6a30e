"""``make bench PROFILE=real``: the methods on real image-text pairs, run to the regime DISSect is for.

The design below was written before any run of it, and before any selection method ran on these
pairs; it is not changed to favour a method (a new design is a new profile).

- Data: ``make-data --source openclipart`` (docs/data.md): the Open Clip Art Library's drawings
  with their authors' titles, descriptions and tags (natural junk kept and flagged), 30% of the
  training captions shuffled, clean ``val`` (watched by ``auto`` only) and ``test`` (reported)
  splits of 500 pairs each, images at 64 px. One fixed draw (``data_seed`` 0): seeds vary
  initialisation and order only, every method sees the same data, differences are paired.
- Model: ``dissect-vit-tiny`` (32 px input), the smallest of the package's configs that learns
  these pairs (a probe of 30 epochs on full data ended at test R@sum 31.5 against about 3 by
  chance; ``dissect-vit-micro`` is the suite's config for runs that need not learn). lr 1e-3,
  batch 128, 50 warm-up steps, OpenCLIP's AdamW and cosine schedule; one thread a run, two runs
  at a time; every run with ``--deterministic``: the profile runs over several sessions, on
  machines whose CPUs differ, and the pinned kernels make a run's bits the same on each.
- Calibration (``real-calibration``, before any selection run): full data (``observe``), seeds 0
  and 1, 50 epochs, evaluated every epoch. Per epoch: the clean and noisy pairs' mean CLIPScore,
  their gap, the absolute-score AUROC, test R@sum.
- The main regime's length, by a rule fixed before the calibration ran: E = the first epoch at
  which the clean-noisy gap (mean of the two calibration seeds) has fallen to half of its peak
  or below (the model has memorised much of the shuffled pairs), at least 12, and 50 if it
  never does within the 50 calibration epochs. (A run of E < 50 epochs decays its learning rate
  sooner than the calibration run did, so its gap need not halve at E; the rule fixes the
  length, not the outcome.)
- Main regime (``real``): E epochs, evaluated every epoch, seeds 0-4, r = 0.5. Methods: full
  data, ``random``, ``small-loss``, ``clipscore``, ``big-loss``, ``infobatch`` (its own pruning
  rate), ``dissect-warmup`` with the authors' warm-up of a quarter of the epochs and with
  ``auto`` (the default signal: R@sum of the validation split), ``dissect-mome``. r = 0.3 is left
  out (the budget: about 10 hours of the 2-core machine for the whole profile).
- The number a run ends with: the mean test R@sum of its last three evaluations (R@sum moved by
  up to 5 points between single epochs of the probe), fixed before any selection run.
- Claims: paired differences with 95% t-intervals against ``random``, the best non-DISSect method
  and full data; "level" only within +-3% of full data's mean. Cost: samples back-propagated,
  scoring passes, CPU seconds. From the records: lock-in, the share of the rare clean pairs'
  visits kept, and the share of the junk pairs' visits kept (captions that name a collection, a
  creator, an address or nothing, which no noise label marks) against the other clean pairs'.
- Premise table (from every full-data run, both regimes): the epoch of the clean pairs' peak
  mean CLIPScore, its drop to the end, the noisy pairs' rise over the same epochs, the gap's
  peak epoch against the end of the quarter warm-up, and full data's decline from its R@sum
  peak; the paper's Fig. 3 drawn from those runs. If the premise (the clean mean peaks early
  and drops while the noisy one rises) does not appear, the report says so: that is a result.

E, fixed by the rule from the calibration (2026-12-06, before any selection run): the seed-mean gap
peaked at epoch 9 (14.31) and had halved at epoch 36: E = 36, the authors' warm-up 9 epochs.
Cost, from the calibration's CPU time (a full-data epoch with every score recorded: about 35 s
of one core): about 45 runs x 36 epochs x 25 s (most runs back-propagate half and score all),
11 CPU-hours, about 6 hours on the 2-core machine with two runs at a time.

Order: the calibration, then (E fixed) full data on every seed, then seed by seed every method.
Runs are cached in ``docs/real_bench/runs/`` (committed: the profile resumes across sessions);
data and logs live in ``bench/results/real/``.
"""

REAL_DATA = dict(noise_rate=0.3, val=500, test=500, image_size=64)
# label: (strategy, extra flags, takes --ratio); "{quarter}" is a quarter of the regime's epochs.
METHODS = {
    "full": ("observe", [], False),
    "random": ("random", [], True),
    "small-loss": ("small-loss", [], True),
    "clipscore": ("clipscore", [], True),
    "big-loss": ("big-loss", [], True),
    "infobatch": ("infobatch", [], False),
    "dissect-warmup-fixed": ("dissect-warmup", ["--dissect-warmup-epochs", "{quarter}"], True),
    "dissect-warmup-auto": ("dissect-warmup", ["--dissect-warmup-epochs", "auto"], True),
    "dissect-mome": ("dissect-mome", [], True),
}
BASELINES = ("random", "small-loss", "clipscore", "big-loss", "infobatch")  # the non-DISSect methods
SCORING_FREE = ("full", "random")  # methods that need no scoring pass of their own
CALIBRATION_EPOCHS, LEAST_EPOCHS = 50, 12
COMMON = dict(builder="openclipart", data=REAL_DATA, data_seed=0, batch=128, val_every=1, warmup=50)
REAL = dict(
    regimes={
        "real-calibration": dict(
            COMMON, epochs=CALIBRATION_EPOCHS, ratios=(0.5,), seeds=(0, 1), methods=("full",), calibration=True
        ),
        # E = 36 by the length rule on the calibration runs (docs/real_bench/results.md).
        "real": dict(COMMON, epochs=36, ratios=(0.5,), seeds=(0, 1, 2, 3, 4), methods=tuple(METHODS)),
    },
    model="dissect-vit-tiny",
    lr=1e-3,
    parallel=2,
    equivalence=0.03,
    final_window=3,
    deterministic=True,
    methods=METHODS,
    retired={},
    # The rare group's size in the data draw (data seed 0; its manifest.json, `splits`): too few for
    # the rare columns to measure a group, so the report leaves them out and says why. A fact of the
    # data, added after the calibration; it changes no run.
    group_sizes={"rare": {"train": 16, "test": 2}},
    baselines=BASELINES,
    scoring_free=SCORING_FREE,
)
