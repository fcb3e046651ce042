"""The NTM's addressing steps as pure functions (Graves et al. 2014, section 3.3).

All functions work on every head of every environment at once: weightings are ``[B, G, N]``
for ``B`` environments, ``G`` heads and ``N`` memory rows, and per-head scalars are ``[B, G]``.
There is no loop over the batch, the heads or the memory rows. :func:`address` runs the four
addressing steps as one op with a hand-written backward, the form :class:`~ntm_rl.cores.NTMCore`
uses; the separate steps define what it computes (the tests hold the two equal).
"""

from __future__ import annotations

import torch

# Added to weightings before their log in sharpening, so that a zero weight stays finite.
_SHARPEN_EPS = 1e-12


def _cosine_forward(
    memory: torch.Tensor, keys: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine similarities ``[B, G, N]`` with the row norms ``[B, N]`` and key norms ``[B, G]``."""
    row_norms = torch.linalg.vector_norm(memory, dim=-1).square_().add_(eps).sqrt_()
    key_norms = torch.linalg.vector_norm(keys, dim=-1).square_().add_(eps).sqrt_()
    similarity = torch.bmm(keys, memory.transpose(1, 2))
    similarity.div_(key_norms.unsqueeze(-1)).div_(row_norms.unsqueeze(1))
    return similarity, row_norms, key_norms


def _cosine_backward(
    grad: torch.Tensor,
    memory: torch.Tensor,
    keys: torch.Tensor,
    row_norms: torch.Tensor,
    key_norms: torch.Tensor,
    similarity: torch.Tensor,
    needs_grad: tuple[bool, bool] = (True, True),
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of memory and keys from the gradient of their cosine similarities.

    Autograd of the plain formula keeps a squared copy of memory per step and makes several
    passes over it; this touches memory twice (the memory tensor itself is the state, kept alive
    anyway). Memory traffic is what an NTM step costs on a CPU.
    """
    # cos = dot / (|k| |m|): d dot = g / (|k| |m|), d|m| = -sum_g g cos / |m|, d|k| likewise,
    # and d|x|/dx = x / |x| (eps inside the root does not change it).
    grad_dots = grad / (key_norms.unsqueeze(-1) * row_norms.unsqueeze(1))
    grad_cos = grad * similarity
    grad_memory = grad_keys = None
    if needs_grad[0]:
        row_coef = -grad_cos.sum(1) / row_norms.square()  # [B, N]
        grad_memory = torch.bmm(grad_dots.transpose(1, 2), keys).addcmul_(row_coef.unsqueeze(-1), memory)
    if needs_grad[1]:
        key_coef = -grad_cos.sum(2) / key_norms.square()  # [B, G]
        grad_keys = torch.bmm(grad_dots, memory).addcmul_(key_coef.unsqueeze(-1), keys)
    return grad_memory, grad_keys


class _CosineSimilarity(torch.autograd.Function):
    """Cosine similarity of keys with memory rows, with a hand-written backward."""

    @staticmethod
    def forward(ctx, memory: torch.Tensor, keys: torch.Tensor, eps: float) -> torch.Tensor:
        similarity, row_norms, key_norms = _cosine_forward(memory, keys, eps)
        ctx.save_for_backward(memory, keys, row_norms, key_norms, similarity)
        return similarity

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        return (*_cosine_backward(grad, *ctx.saved_tensors, needs_grad=ctx.needs_input_grad[:2]), None)


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
    padded = _circular_pad(weights, radius)
    shifted = shift_weights[..., -1:] * padded[..., :size]
    for j in range(1, 2 * radius + 1):  # over the 2S + 1 offsets, never over rows
        shifted = torch.addcmul(
            shifted, shift_weights[..., 2 * radius - j : 2 * radius - j + 1], padded[..., j : j + size]
        )
    return shifted


def _circular_pad(weights: torch.Tensor, radius: int) -> torch.Tensor:
    """Pad the last dim circularly by ``radius`` on both sides.

    The slice of the result starting at ``j`` (a view) is ``weights[(n + j - S) mod N]``: the
    weighting moved by offset ``S - j``.
    """
    size = weights.shape[-1]
    return torch.cat([weights[..., size - radius :], weights, weights[..., :radius]], dim=-1)


def sharpen(weights: torch.Tensor, gamma: torch.Tensor, eps: float = _SHARPEN_EPS) -> torch.Tensor:
    """``w^gamma / sum(w^gamma)`` with ``gamma >= 1``, computed as a softmax of ``gamma * log w``.

    The log-space form cannot overflow or divide by zero, where ``w ** gamma`` underflows to 0
    for every row of a diffuse weighting once ``gamma`` is large.
    """
    return torch.softmax(gamma.unsqueeze(-1) * torch.log(weights + eps), dim=-1)


def _softmax_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Gradient of a softmax's input over the last dim, from its output and output gradient."""
    return output * (grad - (grad * output).sum(-1, keepdim=True))


class _Address(torch.autograd.Function):
    """Content addressing, interpolation, shift and sharpening as one op with its own backward.

    The same arithmetic as composing :func:`content_weighting`, :func:`interpolate`,
    :func:`shift` and :func:`sharpen`, but autograd records one node instead of some twenty:
    on a CPU an NTM step's tensors are small, and per-op overhead, not arithmetic, is its cost.
    """

    @staticmethod
    def forward(ctx, memory, keys, strengths, gates, shifts, sharpening, previous, eps, sharpen_eps):
        similarity, row_norms, key_norms = _cosine_forward(memory, keys, eps)
        content = torch.softmax(strengths.unsqueeze(-1) * similarity, dim=-1)
        gated = torch.lerp(previous, content, gates.unsqueeze(-1))
        shifted = shift(gated, shifts).add_(sharpen_eps)
        log_shifted = torch.log(shifted)
        weights = torch.softmax(sharpening.unsqueeze(-1) * log_shifted, dim=-1)
        ctx.save_for_backward(memory, keys, row_norms, key_norms, similarity, strengths, content, gates,
                              previous, gated, shifts, shifted, log_shifted, sharpening, weights)  # fmt: skip
        return weights

    @staticmethod
    def backward(ctx, grad):
        (memory, keys, row_norms, key_norms, similarity, strengths, content, gates,
         previous, gated, shifts, shifted, log_shifted, sharpening, weights) = ctx.saved_tensors  # fmt: skip
        # Sharpening, w = softmax(gamma log s): dgamma = sum dz log s, ds = dz gamma / s.
        grad_logits = _softmax_backward(grad, weights)
        grad_sharpening = (grad_logits * log_shifted).sum(-1)
        grad_shifted = grad_logits.mul_(sharpening.unsqueeze(-1)).div_(shifted)
        # Shift, out[n] = sum_j s[j] w[n - j + S]: the gradient of w is the same convolution with s
        # reversed; that of s[j] pairs the gradient with w moved by j - S (window 2S - j below).
        radius = (shifts.shape[-1] - 1) // 2
        grad_gated = shift(grad_shifted, shifts.flip(-1))
        windows = _circular_pad(gated, radius).unfold(-1, gated.shape[-1], 1)  # [B, G, 2S + 1, N]
        grad_shifts = (windows * grad_shifted.unsqueeze(-2)).sum(-1).flip(-1)
        # Interpolation, g c + (1 - g) p.
        grad_content = grad_gated * gates.unsqueeze(-1)
        grad_gates = (grad_gated * (content - previous)).sum(-1)
        grad_previous = grad_gated.sub_(grad_content)
        # Content weighting, softmax(beta cos).
        grad_scores = _softmax_backward(grad_content, content)
        grad_strengths = (grad_scores * similarity).sum(-1)
        grad_memory, grad_keys = _cosine_backward(
            grad_scores.mul_(strengths.unsqueeze(-1)), memory, keys, row_norms, key_norms, similarity,
            needs_grad=ctx.needs_input_grad[:2],
        )  # fmt: skip
        return (
            grad_memory,
            grad_keys,
            grad_strengths,
            grad_gates,
            grad_shifts,
            grad_sharpening,
            grad_previous,
            None,
            None,
        )


def address(
    memory: torch.Tensor,
    keys: torch.Tensor,
    strengths: torch.Tensor,
    gates: torch.Tensor,
    shifts: torch.Tensor,
    sharpening: torch.Tensor,
    previous: torch.Tensor,
    eps: float = 1e-8,
) -> torch.Tensor:
    """The NTM's whole addressing step for every head: content, interpolation, shift, sharpening.

    Equal to ``sharpen(shift(interpolate(content_weighting(memory, keys, strengths, eps),
    previous, gates), shifts), sharpening)``, computed as one op with a hand-written backward.

    :param memory: ``[B, N, M]``.
    :param keys: ``[B, G, M]``.
    :param strengths: key strengths ``beta >= 0``, ``[B, G]``.
    :param gates: interpolation gates in [0, 1], ``[B, G]``.
    :param shifts: shift distributions over offsets ``-S..S``, ``[B, G, 2S + 1]``.
    :param sharpening: ``gamma >= 1``, ``[B, G]``.
    :param previous: the previous step's weightings, ``[B, G, N]``.
    :param eps: stabiliser of :func:`cosine_similarity`.
    :return: ``[B, G, N]`` weightings.
    """
    return _Address.apply(memory, keys, strengths, gates, shifts, sharpening, previous, eps, _SHARPEN_EPS)


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
            if read_weights.shape[1] == 1:  # an outer product: broadcasting beats a batched matmul
                grad_mem.addcmul_(read_weights.transpose(1, 2), grad_read)
            else:
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
