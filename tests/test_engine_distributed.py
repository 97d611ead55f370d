"""Two gloo processes on the CPU give the numbers of one process (torch.distributed)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row
from maelens.analyses.embeddings import LayerEmbeddings
from maelens.engine.distributed import World, finish, gather_to_main, shard_range
from maelens.engine.plan import PassPlan
from maelens.model.taps import Capture, Taps
from tests.conftest import tiny_model

pytestmark = pytest.mark.slow


class Gram(Analysis):
    """Sum of x xᵀ of mean-patch embeddings (float64) and an image count."""

    name = "gram"
    taps = Taps(hidden=[2], final=False)

    def __init__(self) -> None:
        super().__init__()
        self.add_state("gram", None, "sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), "sum")

    def update(self, capture: Capture, batch: Batch) -> Gram:
        x = capture.hidden[2][:, 1:].mean(1).double()
        gram = x.T @ x
        self.gram = gram if self.gram is None else self.gram + gram
        self.count = self.count + len(x)
        return self

    def result(self) -> AnalysisResult:
        return AnalysisResult(self.name, [Row("count", float(self.count))],
                              arrays={"gram": self.gram.numpy()})


def experiment(world: World, num_images: int) -> list[AnalysisResult] | None:
    pixels = torch.rand(num_images, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(num_images) % 3
    start, stop = shard_range(num_images, world)
    analyses = [LayerEmbeddings(layers=[0, 2]), Gram()]
    plan = PassPlan(tiny_model(num_classes=3))
    for analysis in analyses:
        plan.add(analysis)
    plan.feed(Batch(pixels[i:i + 2], torch.arange(i, min(i + 2, stop)), labels[i:i + 2])
              for i in range(start, stop, 2))
    if gather_to_main(analyses, world):
        return [a.result() for a in analyses]
    return None


def _worker(rank: int, size: int, port: int, num_images: int, out: str, fail: bool) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)  # as the suite's main process (conftest): the same GEMM kernels
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size, timeout=timedelta(seconds=30))
    world = World(rank, size)
    if fail and rank == 1:
        raise RuntimeError("rank 1 failed on purpose")
    results = experiment(world, num_images)
    if results is not None:
        torch.save({r.name: r.arrays for r in results}, out)
    finish(world)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("num_images", [8, 7])  # 7: an uneven shard
def test_two_gloo_ranks_equal_one_process(num_images, tmp_path):
    out = str(tmp_path / "two.pt")
    mp.spawn(_worker, args=(2, _free_port(), num_images, out, False), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    one = {r.name: r.arrays for r in experiment(World(), num_images)}
    for name, arrays in one.items():
        for key, value in arrays.items():
            other = two[name][key]
            if np.issubdtype(value.dtype, np.integer):
                np.testing.assert_array_equal(other, value)
            else:
                np.testing.assert_allclose(other, value, rtol=1e-6, atol=1e-12)


def test_a_failing_rank_ends_the_run_with_its_error(tmp_path):
    # Whichever process the launcher reports first: the failing rank's own error, or its peer's
    # collective ending at once because the connection closed (never a hang).
    with pytest.raises(Exception, match="rank 1 failed on purpose|remote worker crashing"):
        mp.spawn(_worker, args=(2, _free_port(), 4, str(tmp_path / "x.pt"), True), nprocs=2,
                 join=True)


def test_shards_cover_every_image_once():
    for n in range(0, 12):
        for size in (1, 2, 3, 5):
            ranges = [shard_range(n, World(r, size)) for r in range(size)]
            covered = [i for lo, hi in ranges for i in range(lo, hi)]
            assert covered == list(range(n))


def _command_worker(rank: int, size: int, port: int, out: str, which: str) -> None:
    """`extract` / `run_robustness` as torchrun runs them: a process group, one shard each."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    result = _command(which)
    if result is not None:
        torch.save(result, out)
    finish(World(rank, size))


def _command(which: str) -> dict | None:
    from maelens.studies.extract import ExtractSettings, extract
    from maelens.studies.inputs import ImageSet
    from maelens.studies.robustness import RobustnessSettings, run_robustness

    model = tiny_model(5, num_classes=3, pool="avg", fc_norm=True, final_norm=False)
    pixels = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    if which == "extract":
        settings = ExtractSettings(kinds=("hidden", "attn", "logits"), layers=None,
                                   mask_ratio=0.5, seed=3, batch_size=2)
        return extract(model, pixels, settings)
    images = ImageSet(pixels, torch.arange(7) % 3, ["a", "b", "c"], [str(i) for i in range(7)],
                      "random")
    settings = RobustnessSettings(blur_levels=((3, 1.0),), percents=(0.0, 50.0),
                                  corruptions=("contrast",), severities=(1,), masks=2,
                                  bootstrap=10, batch_size=2, top_k=4)
    results = run_robustness(model, images, settings, model_name="m")
    return None if results is None else {"rows": results.rows, "arrays": results.arrays}


@pytest.mark.parametrize("which", ["extract", "robustness"])
def test_commands_sharded_over_two_ranks_equal_one_process(which, tmp_path):
    out = str(tmp_path / "two.pt")
    mp.spawn(_command_worker, args=(2, _free_port(), out, which), nprocs=2, join=True)
    two, one = torch.load(out, weights_only=False), _command(which)
    if which == "robustness":
        assert [r["value"] for r in two["rows"]] == pytest.approx(
            [r["value"] for r in one["rows"]], rel=1e-6, nan_ok=True)
        two, one = two["arrays"], one["arrays"]
    assert two.keys() == one.keys()
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-6, atol=1e-12, err_msg=key)
