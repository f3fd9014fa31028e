"""The attention memory (paper eq. 6): softmax weights, the bilinear score, gradients."""

import pytest
import torch

from positrongan.models.memory import AttentionMemory


def memory_module(trainable=False, m=7, k=5, d=4, seed=0):
    torch.manual_seed(seed)
    return AttentionMemory(d, torch.randn(m, k) * 3 + 1, trainable=trainable)


def test_attention_weights_sum_to_one_and_change_with_the_query():
    mem = memory_module()
    with torch.no_grad():
        mem.w_a.normal_()
    z = torch.randn(6, 4)
    a = mem.attention(z)
    assert a.shape == (6, 7)
    assert torch.all(a >= 0)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(6))
    assert (a[0] - a[1]).abs().max() > 1e-3
    assert (mem.attention(z + 1.0) - a).abs().max() > 1e-3


def test_score_is_the_bilinear_form_and_context_the_weighted_memory():
    mem = memory_module()
    z = torch.randn(3, 4)
    y = mem.memory
    # score(z, y_s) = z^T W_a y_s, one entry at a time.
    scores = torch.tensor([[float((z[b] @ mem.w_a @ y[s]).detach()) for s in range(len(y))] for b in range(3)])
    a = torch.softmax(scores, dim=1)
    torch.testing.assert_close(mem.attention(z), a)
    zc, _ = mem(z)
    torch.testing.assert_close(zc[:, :4], z)
    torch.testing.assert_close(zc[:, 4:], a @ y)
    assert mem.out_dim == 4 + 5


def test_zero_w_a_gives_uniform_attention_and_the_memory_mean():
    mem = memory_module()
    with torch.no_grad():
        mem.w_a.zero_()
    zc, a = mem(torch.randn(2, 4))
    torch.testing.assert_close(a, torch.full((2, 7), 1 / 7))
    torch.testing.assert_close(zc[:, 4:], mem.memory.mean(dim=0).expand(2, -1))


def test_memory_is_whitened_per_dimension():
    mem = memory_module()
    torch.testing.assert_close(mem.memory.std(dim=0, unbiased=False), torch.ones(5))


@pytest.mark.parametrize("trainable", [False, True])
def test_gradients_reach_w_a_and_the_memory_when_trainable(trainable):
    mem = memory_module(trainable=trainable)
    zc, _ = mem(torch.randn(5, 4))
    (zc[:, 4:] ** 2).sum().backward()
    assert mem.w_a.grad is not None and mem.w_a.grad.abs().sum() > 0
    names = {n for n, _ in mem.named_parameters()}
    if trainable:
        assert "memory" in names and mem.memory.grad.abs().sum() > 0
    else:
        assert names == {"w_a"}


def test_bad_memory_shape_is_rejected():
    with pytest.raises(ValueError, match="memory"):
        AttentionMemory(4, torch.zeros(5))


def test_mean_and_none_memory_ablations_ignore_the_query():
    memory = torch.randn(7, 3)
    z = torch.randn(5, 4)
    mean = AttentionMemory(4, memory, mode="mean")
    zc, a = mean(z)
    torch.testing.assert_close(zc[:, :4], z)
    # c is the (whitened) memory mean for every query: uniform attention, no W_a.
    torch.testing.assert_close(zc[:, 4:], mean.memory.mean(0).expand(5, 3))
    torch.testing.assert_close(a, torch.full((5, 7), 1 / 7))
    none = AttentionMemory(4, memory, mode="none")
    zc, _ = none(z)
    assert zc.shape == (5, 7) and torch.equal(zc[:, 4:], torch.zeros(5, 3))
    with pytest.raises(ValueError, match="mode"):
        AttentionMemory(4, memory, mode="max")
