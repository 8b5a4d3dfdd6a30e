"""Multi-caption retrieval metrics against hand-computed rankings."""

import pytest
import torch

from open_clip_dissect.openclip.evaluation.retrieval import retrieval_metrics


def _unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_hand_computed_rankings_with_several_captions():
    # 3 images on the axes; image 0 has captions 0, 1; image 1 has 2, 3; image 2 has 4.
    images = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    texts = _unit(
        [1, 0.1, 0],  # t0 -> image 0 first: IR rank 0
        [0.2, 1, 0],  # t1 (image 0) -> image 1 first, image 0 second: rank 1
        [0, 1, 0.5],  # t2 -> image 1: rank 0
        [0, 0.3, 1],  # t3 (image 1) -> image 2, image 1: rank 1
        [1, 0, 0.9],
    )  # t4 (image 2) -> image 0, image 2: rank 1
    text_image = torch.tensor([0, 0, 1, 1, 2])
    m = retrieval_metrics(images, texts, text_image, ks=(1, 2, 10))
    assert m["IR@1"] == pytest.approx(100 * 2 / 5) and m["IR@2"] == pytest.approx(100.0)
    # Image queries (cosines of each image with t0..t4; a hit needs any own caption in the top k):
    # image 0: .995 .196 0 0 .743 -> own best t0 ranks 0.
    # image 1: .0995 .98 .894 .287 0 -> own best t2 (.894); t1 (.98) is above it: rank 1.
    # image 2: 0 0 .447 .958 .669 -> own t4 (.669); t3 (.958) is above it: rank 1.
    assert m["TR@1"] == pytest.approx(100 / 3) and m["TR@2"] == pytest.approx(100.0)
    assert m["R@sum"] == pytest.approx(m["IR@1"] + m["IR@10"] + m["TR@1"] + m["TR@10"])


def test_ties_count_against_the_query():
    images = _unit([1, 0], [1, 0])  # two identical images
    texts = _unit([1, 0], [1, 0])
    m = retrieval_metrics(images, texts, torch.tensor([0, 1]), ks=(1, 2))
    assert m["IR@1"] == 0.0 and m["IR@2"] == 100.0
    assert m["TR@1"] == 0.0 and m["TR@2"] == 100.0


def test_perfect_and_chunked():
    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=-1)
    text_image = torch.arange(50).repeat_interleave(3)
    texts = images[text_image] + 0.01 * torch.randn(150, 16, generator=g)
    full = retrieval_metrics(images, texts, text_image)
    assert full["IR@1"] == full["TR@1"] == 100.0 and full["R@sum"] == 400.0
    assert retrieval_metrics(images, texts, text_image, chunk=7) == full
