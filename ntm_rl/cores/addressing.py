"""The NTM's addressing steps as pure functions (Graves et al. 2014, section 3.3).

All functions work on every head of every environment at once: weightings are ``[B, G, N]``
for ``B`` environments, ``G`` heads and ``N`` memory rows, and per-head scalars are ``[B, G]``.
There is no loop over the batch, the heads or the memory rows.
"""

from __future__ import annotations

import torch


class _CosineSimilarity(torch.autograd.Function):
    """Cosine similarity of keys with memory rows, with a hand-written backward.

    Autograd of the plain formula keeps a squared copy of memory per step and makes several
    passes over it; this backward touches memory twice (the memory tensor itself is the state,
    kept alive anyway). Memory traffic is what an NTM step costs on a CPU.
    """

    @staticmethod
    def forward(ctx, memory: torch.Tensor, keys: torch.Tensor, eps: float) -> torch.Tensor:
        row_norms = torch.linalg.vector_norm(memory, dim=-1).square_().add_(eps).sqrt_()  # [B, N]
        key_norms = torch.linalg.vector_norm(keys, dim=-1).square_().add_(eps).sqrt_()  # [B, G]
        similarity = torch.bmm(keys, memory.transpose(1, 2))
        similarity.div_(key_norms.unsqueeze(-1)).div_(row_norms.unsqueeze(1))
        ctx.save_for_backward(memory, keys, row_norms, key_norms, similarity)
        return similarity

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        memory, keys, row_norms, key_norms, similarity = ctx.saved_tensors
        # cos = dot / (|k| |m|): d dot = g / (|k| |m|), d|m| = -sum_g g cos / |m|, d|k| likewise,
        # and d|x|/dx = x / |x| (eps inside the root does not change it).
        grad_dots = grad / (key_norms.unsqueeze(-1) * row_norms.unsqueeze(1))
        grad_cos = grad * similarity
        row_coef = -grad_cos.sum(1) / row_norms.square()  # [B, N]
        key_coef = -grad_cos.sum(2) / key_norms.square()  # [B, G]
        grad_memory = grad_keys = None
        if ctx.needs_input_grad[0]:
            grad_memory = torch.bmm(grad_dots.transpose(1, 2), keys)
            grad_memory.addcmul_(row_coef.unsqueeze(-1), memory)
        if ctx.needs_input_grad[1]:
            grad_keys = torch.bmm(grad_dots, memory).addcmul_(key_coef.unsqueeze(-1), keys)
        return grad_memory, grad_keys, None


def cosine_similarity(memory: torch.Tensor, keys: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of every key with every memory row.

    :param memory: ``[B, N, M]``.
    :param keys: ``[B, G, M]``.
    :param eps: added under each square root, so that a zero row or key gives similarity 0
        rather than a division by zero (the constant 1e-6 memory init is nearly zero).
    :return: ``[B, G, N]``.
    """
    return _CosineSimilarity.apply(memory, keys, eps)


def content_weighting(
    memory: torch.Tensor, keys: torch.Tensor, strengths: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Focus by content: softmax over rows of ``strength * cosine(key, row)``.

    :param memory: ``[B, N, M]``.
    :param keys: ``[B, G, M]``.
    :param strengths: key strengths ``beta >= 0``, ``[B, G]``.
    :param eps: stabiliser of :func:`cosine_similarity`.
    :return: ``[B, G, N]`` weightings (softmax is max-shifted by torch, so large strengths do
        not overflow).
    """
    return torch.softmax(strengths.unsqueeze(-1) * cosine_similarity(memory, keys, eps), dim=-1)


def interpolate(content: torch.Tensor, previous: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Blend content and previous weightings: ``g * content + (1 - g) * previous``, ``g`` in [0, 1]."""
    return torch.lerp(previous, content, gate.unsqueeze(-1))


def shift(weights: torch.Tensor, shift_weights: torch.Tensor) -> torch.Tensor:
    """Circular convolution of weightings with a distribution over offsets ``-S..S``.

    ``out[n] = sum_o shift_weights[o + S] * weights[(n - o) mod N]``: offset ``+1`` moves the
    focus one row forward, and rows wrap around.

    :param weights: ``[B, G, N]``.
    :param shift_weights: ``[B, G, 2S + 1]``, index ``j`` is offset ``j - S``; requires ``S < N``.
    :return: ``[B, G, N]``.
    """
    size = weights.shape[-1]
    radius = (shift_weights.shape[-1] - 1) // 2
    # Pad circularly: the slice of the padding starting at j (a view) is weights[(n + j - S) mod N],
    # the weighting moved by offset S - j.
    padded = torch.cat([weights[..., size - radius :], weights, weights[..., :radius]], dim=-1)
    shifted = shift_weights[..., -1:] * padded[..., :size]
    for j in range(1, 2 * radius + 1):  # over the 2S + 1 offsets, never over rows
        shifted = torch.addcmul(
            shifted, shift_weights[..., 2 * radius - j : 2 * radius - j + 1], padded[..., j : j + size]
        )
    return shifted


def sharpen(weights: torch.Tensor, gamma: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``w^gamma / sum(w^gamma)`` with ``gamma >= 1``, computed as a softmax of ``gamma * log w``.

    The log-space form cannot overflow or divide by zero, where ``w ** gamma`` underflows to 0
    for every row of a diffuse weighting once ``gamma`` is large.
    """
    return torch.softmax(gamma.unsqueeze(-1) * torch.log(weights + eps), dim=-1)


class _ReadWriteOneHead(torch.autograd.Function):
    """Read, then erase and add with one write head, with a hand-written backward.

    ``r = w_r M`` and ``M' = M + w (a - e * M)`` (erase-then-add rearranged to three passes over
    memory). The backward saves nothing memory-sized beyond ``M`` itself and makes fewer passes
    over memory than autograd of the same formula.
    """

    @staticmethod
    def forward(ctx, memory, read_weights, write_weights, erase, add):
        read_vectors = torch.bmm(read_weights, memory)
        update = torch.addcmul(-add, memory, erase)  # e * M - a, one pass
        new_memory = torch.addcmul(memory, write_weights.transpose(1, 2), update, value=-1.0)
        ctx.save_for_backward(memory, read_weights, write_weights, erase, add)
        return read_vectors, new_memory

    @staticmethod
    def backward(ctx, grad_read, grad_memory):
        memory, read_weights, write_weights, erase, add = ctx.saved_tensors
        if grad_memory is None:  # the new memory did not reach the loss
            grad_memory = torch.zeros_like(memory)
        column = write_weights.transpose(1, 2)  # [B, N, 1]
        # M' = M + w (a - e M):  dM = g (1 - w e),  da = sum_n w g,  de = -sum_n w g M,
        # dw = sum_m g (a - e M).
        weighted = grad_memory * column  # w g, [B, N, M]
        grad_times_memory = grad_memory * memory
        grad_add = weighted.sum(1, keepdim=True)
        grad_erase = torch.bmm(write_weights, grad_times_memory).neg_()
        grad_write = torch.bmm(add, grad_memory.transpose(1, 2))
        grad_write.sub_(torch.bmm(erase, grad_times_memory.transpose(1, 2)))
        grad_mem = torch.addcmul(grad_memory, weighted, erase, value=-1.0)
        grad_read_weights = None
        if grad_read is not None:
            grad_mem.baddbmm_(read_weights.transpose(1, 2), grad_read)
            grad_read_weights = torch.bmm(grad_read, memory.transpose(1, 2))
        return grad_mem, grad_read_weights, grad_write, grad_erase, grad_add


def read(memory: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Read vectors ``r = w M``: ``[B, R, N]`` weightings over ``[B, N, M]`` -> ``[B, R, M]``."""
    return torch.bmm(weights, memory)


def write(memory: torch.Tensor, weights: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """Erase then add: ``M' = M * prod_i(1 - w_i e_i^T) + sum_i w_i a_i^T``.

    :param memory: ``[B, N, M]``.
    :param weights: write weightings ``[B, W, N]``.
    :param erase: erase vectors in [0, 1], ``[B, W, M]``.
    :param add: add vectors ``[B, W, M]``.
    :return: the new memory ``[B, N, M]`` (the input is not modified).
    """
    # Erasures by several heads commute, so their product is order-free.
    keep = (1.0 - weights.unsqueeze(-1) * erase.unsqueeze(-2)).prod(dim=1)
    return torch.baddbmm(memory * keep, weights.transpose(1, 2), add)


def read_write(
    memory: torch.Tensor,
    read_weights: torch.Tensor,
    write_weights: torch.Tensor,
    erase: torch.Tensor,
    add: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read from ``memory``, then write to it: :func:`read` and :func:`write` in one step.

    With one write head this runs as one fused operation with its own backward (the common
    case, and the one that dominates an NTM's cost); with several it composes the two.

    :return: read vectors ``[B, R, M]`` and the new memory ``[B, N, M]``.
    """
    if write_weights.shape[1] == 1:
        return _ReadWriteOneHead.apply(memory, read_weights, write_weights, erase, add)
    return read(memory, read_weights), write(memory, write_weights, erase, add)
