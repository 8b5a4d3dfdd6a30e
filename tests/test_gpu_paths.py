"""The code paths that matter on a GPU, tested on the CPU where their logic allows (tests marked
``cuda`` run only where CUDA is: ``make gpu-check``): the candidate batch is released before the
training step, host batches are pinned for CUDA devices, phase times come from CUDA events,
the device of a task confined to one GPU, and --horovod refused with a selection."""

import weakref

import open_clip
import pytest
import torch
from conftest import TINY

from open_clip_dissect.core import strategies
from open_clip_dissect.core.epoch_decisions import EpochDecisions
from open_clip_dissect.core.history import hash_keys
from open_clip_dissect.core.selector import Selector
from open_clip_dissect.core.transfer import to_device
from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.launch import devices, params
from open_clip_dissect.openclip.pipeline import keyed_data as data
from open_clip_dissect.openclip.training.selecting_loader import LoaderConfig, SelectingLoader
from open_clip_dissect.openclip.training.timing import PhaseTimer
from open_clip_dissect.openclip.training.weighted_loss import LossWeights

CUDA = pytest.param("cuda", marks=pytest.mark.cuda)


class FreshBatches:
    """A loader whose batches nothing else references once yielded (as a DataLoader's)."""

    num_batches = 3
    num_samples = 24

    def __iter__(self):
        tok = open_clip.get_tokenizer(TINY)
        for b in range(self.num_batches):
            keys = [f"s{b}-{i}" for i in range(8)]
            yield (
                torch.randn(8, 3, 32, 32),
                tok([f"caption {b} {i}" for i in range(8)]),
                keys,
                hash_keys(keys),
                torch.tensor([i % 2 for i in range(8)], dtype=torch.int8),
            )


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("selection", ["dissect-mome", "infobatch"])
def test_the_candidate_batch_is_released_before_the_training_step(selection, device):
    model = open_clip.create_model(TINY, output_dict=True).to(device)
    strategy = strategies.create_strategy(selection)
    loader = SelectingLoader(
        FreshBatches(),
        Selector(strategy, ratio=0.5),
        model,
        LoaderConfig(selection=selection, candidates=8, device=device),
        0,
        EpochDecisions(),
        loss_weights=LossWeights() if strategy.variable_kept else None,
    )
    scored = []  # weak references to what the scoring pass saw and made
    scorer = loader.scorer

    def watched(images, texts):
        features = scorer(images, texts)
        scored.append([weakref.ref(t) for t in (images, texts, features, features.image, features.text)])
        return features

    loader.scorer = watched
    steps = 0
    for images, texts in loader:  # the training step runs here
        assert [ref() for ref in scored[-1]] == [None] * 5
        steps += 1
    assert steps == 3


def test_host_batches_are_pinned_for_cuda_devices_only(monkeypatch, tiny_data):
    assert not devices.pin_host_batches("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not devices.pin_host_batches("cuda:0")  # OpenCLIP falls back to the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.pin_host_batches("cuda:1") and devices.pin_host_batches("cuda")
    assert not devices.pin_host_batches("cpu")
    for device, pinned in (("cuda:0", True), ("cpu", False)):
        args = params.parse_args(
            [
                "--model",
                TINY,
                "--batch-size",
                "32",
                "--workers",
                "0",
                "--device",
                device,
                "--train-data",
                tiny_data.train,
                "--dataset-type",
                "webdataset",
                "--selection",
                "random",
            ]
        )
        args.world_size, args.rank, args.distributed, args.selection_candidates = 1, 0, False, 32
        preprocess = open_clip.image_transform(32, is_train=True)
        loader = data.get_data(args, (preprocess, preprocess), tokenizer=open_clip.get_tokenizer(TINY))["train"]
        inner = loader.dataloader.pipeline[0]  # WebLoader wraps a DataLoader
        assert isinstance(inner, torch.utils.data.DataLoader) and inner.pin_memory is pinned  # in its thread


@pytest.mark.cuda
def test_a_pinned_copy_is_asynchronous_and_exact():
    batch = torch.randn(64, 3, 32, 32)
    out = to_device(batch, "cuda").to(torch.float16)
    assert out.device.type == "cuda" and out.dtype == torch.float16
    assert torch.equal(out.cpu(), batch.half())


class FakeEvent:
    """A CUDA event on a fake clock: ``record`` stamps it; ``synchronize`` is counted."""

    clock = 0.0
    made = []
    syncs = 0

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.at = None
        FakeEvent.made.append(self)

    def record(self):
        self.at = FakeEvent.clock

    def synchronize(self):
        FakeEvent.syncs += 1

    def elapsed_time(self, end):
        return (end.at - self.at) * 1000.0  # milliseconds, as torch.cuda.Event


def test_phase_timer_on_the_cpu_adds_wall_clock_intervals(monkeypatch):
    clock = iter([1.0, 3.0, 3.5, 10.0, 12.0])
    monkeypatch.setattr("open_clip_dissect.openclip.training.timing.time.perf_counter", lambda: next(clock))
    timer = PhaseTimer("cpu")
    timer.start("scoring")
    timer.start("training")  # ends scoring: 2 s
    timer.stop()  # 0.5 s
    timer.start("scoring")
    timer.stop()  # 2 s
    assert (timer.seconds("scoring"), timer.seconds("training"), timer.seconds("other")) == (4.0, 0.5, 0.0)


def test_phase_timer_on_a_gpu_reads_events_once_per_window(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    FakeEvent.made, FakeEvent.syncs = [], 0
    timer = PhaseTimer("cuda:0")
    for step in range(5):  # what the host launches takes the device longer than launching it
        FakeEvent.clock = 10.0 * step
        timer.start("scoring")
        FakeEvent.clock += 3.0
        timer.start("training")
        FakeEvent.clock += 6.0
        timer.stop()
    assert FakeEvent.syncs == 0  # no wait on the device while the window runs
    assert (timer.seconds("scoring"), timer.seconds("training")) == (15.0, 30.0)
    assert FakeEvent.syncs == 1 and len(FakeEvent.made) == 15
    assert timer.seconds("training") == 30.0 and FakeEvent.syncs == 1  # nothing new to read
    assert PhaseTimer("cpu")._event is None


def test_the_loader_times_phases_with_events_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    FakeEvent.made = []
    model = open_clip.create_model(TINY, output_dict=True)
    loader = SelectingLoader(
        FreshBatches(),
        Selector(strategies.create_strategy("random"), ratio=0.5),
        model,
        LoaderConfig(selection="random", candidates=8, device="cuda:0"),
        0,
        EpochDecisions(),
    )
    loader.timer.start("scoring")
    assert len(FakeEvent.made) == 1 and loader.time_scoring == 0.0


@pytest.mark.cuda
def test_cuda_events_time_the_work_not_its_launch():
    import time

    a = torch.randn(2048, 2048, device="cuda")
    torch.cuda.synchronize()
    timer = PhaseTimer("cuda")
    started = time.perf_counter()
    timer.start("scoring")
    for _ in range(50):
        a = (a @ a).clamp_(-1, 1)
    timer.stop()
    launched = time.perf_counter() - started
    torch.cuda.synchronize()
    done = time.perf_counter() - started
    assert timer.seconds("scoring") > 0.5 * done and done > launched


@pytest.mark.parametrize("selection", strategies.list_strategies())
def test_horovod_is_refused_with_any_selection(selection):
    with pytest.raises(InputError, match="^--horovod: --selection"):
        params.parse_args(["--horovod", "--selection", selection])
    assert params.parse_args(["--horovod"]).horovod  # --selection none: stock OpenCLIP


def test_a_task_that_sees_one_gpu_uses_it_as_cuda_0():
    argv = ["--model", "RN50"]
    for local_rank in range(8):
        flags, note = devices.device_rank_flags(argv, visible_gpus=1, local_rank=local_rank, distributed=True)
        assert flags == argv + ["--no-set-device-rank"] and "cuda:0" in note
    # a node's GPUs all visible: OpenCLIP's own cuda:<local rank>
    assert devices.device_rank_flags(argv, 8, 7, True) == (argv, None)
    assert devices.device_rank_flags(argv, 1, 0, False) == (argv, None)  # one process: nothing to choose
    assert devices.device_rank_flags(argv, 0, 3, True) == (argv, None)  # no CUDA: OpenCLIP uses the CPU
    assert devices.device_rank_flags(argv, 1, 3, True, device="cpu") == (argv, None)
    given = argv + ["--no-set-device-rank"]
    assert devices.device_rank_flags(given, 1, 3, True) == (given, None)
    with pytest.raises(InputError, match="^--device: local rank 2 would use cuda:2, but this process sees 2"):
        devices.device_rank_flags(argv, 2, 2, True)
    # torchrun on a node: its processes all see the same GPUs, so one GPU cannot serve two
    assert devices.device_rank_flags(argv, 8, 3, True, local_processes=8) == (argv, None)
    with pytest.raises(InputError, match="^--device: 4 processes on this node share 1 visible"):
        devices.device_rank_flags(argv, 1, 0, True, local_processes=4)


def as_slurm_task_5_of_8_seeing_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "5")


def test_the_entry_point_reads_the_visible_gpus_and_the_local_rank(monkeypatch):
    as_slurm_task_5_of_8_seeing_one_gpu(monkeypatch)
    flags, note = devices.visible_device_flags(["--device=cuda"])
    assert flags == ["--device=cuda", "--no-set-device-rank"] and note.startswith("local rank 5 ")
    assert devices.visible_device_flags(["--device", "cpu"]) == (["--device", "cpu"], None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert devices.visible_device_flags([]) == ([], None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    with pytest.raises(InputError, match="16 processes on this node share 8"):
        devices.visible_device_flags([])


def test_a_patched_fork_binds_a_task_to_its_one_gpu_as_the_entry_point_does(monkeypatch, capsys):
    from open_clip_dissect.openclip.launch import fork

    as_slurm_task_5_of_8_seeing_one_gpu(monkeypatch)
    args = params.parse_args(["--selection", "random", "--ratio", "0.5"])
    assert not args.no_set_device_rank
    fork.check_args(args)
    assert args.no_set_device_rank and "local rank 5 sees one CUDA device" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    with pytest.raises(SystemExit) as exit_:
        fork.check_args(params.parse_args([]))
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2
        and err.startswith("open_clip_dissect: error: --device: 16 processes")
        and err.count("\n") == 1
    )


def test_the_progress_line_counts_this_ranks_candidates(caplog):
    """The log's count is what this rank scored, not rank 0's count times the world size."""
    model = open_clip.create_model(TINY, output_dict=True)
    loader = SelectingLoader(
        FreshBatches(),
        Selector(strategies.create_strategy("random"), ratio=0.5),
        model,
        LoaderConfig(selection="random", candidates=8, world_size=4, log_every_n_steps=1),
        0,
        EpochDecisions(),
    )
    with caplog.at_level("INFO", logger="open_clip_dissect.openclip.training.selecting_loader"):
        for _ in loader:
            pass
    lines = [r.getMessage() for r in caplog.records if "candidates so far" in r.getMessage()]
    assert lines and lines[-1].split("kept 0.500 of ")[1].startswith("24 candidates so far on rank 0")
