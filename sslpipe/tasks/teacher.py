"""Teacher (momentum) networks: a target network that follows an online one by an EMA.

BYOL (Grill et al. 2020), MoCo v3 (Chen, Xie & He 2021) and DINO (Caron et al. 2021) train an
*online* network by gradient descent and keep a *target* (momentum, teacher) network as an
exponential moving average of its weights, updated after every optimizer step:

    target <- tau * target + (1 - tau) * online

with ``tau`` rising from a base value to 1 on a cosine schedule over training (BYOL's eq. in
section 3.2; moco-v3 ``main_moco.py`` ``adjust_moco_momentum``; dino ``utils.cosine_scheduler``
for the teacher momentum).

A task's model holds one :class:`MomentumPair` per online/target couple; the trainer calls
``task.end_step(model, info)`` after each optimizer step and the task calls
:func:`update_momentum_pairs` with ``cosine_momentum(base, info.progress)``. The target lives in
the model's ``state_dict`` (so checkpoints carry it) and its parameters have
``requires_grad=False`` (so the optimizer leaves them alone). Its buffers (BatchNorm running
statistics) are its own, updated by its own forward passes in train mode, as in the official
DINO and MoCo v3 code (which average parameters only).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["MomentumPair", "cosine_momentum", "update_momentum_pairs"]


class MomentumPair(nn.Module):
    """An online module and its target: a deep copy that follows it by an EMA.

    Args:
        online: the network trained by gradient descent (e.g. backbone + projector).

    Attributes:
        online: the module given.
        target: ``copy.deepcopy(online)`` with ``requires_grad_(False)``; same parameter and
            buffer names and shapes, so ``state_dict`` keys are ``online.*`` and ``target.*``.

    ``forward`` is not defined: callers run ``pair.online(x)`` and ``pair.target(x)`` (the
    target under ``torch.no_grad()``).
    """

    def __init__(self, online: nn.Module) -> None:
        super().__init__()
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)

    @torch.no_grad()
    def update(self, tau: float) -> None:
        """Set every target parameter to ``tau * target + (1 - tau) * online``, in place.

        Args:
            tau: the momentum, in [0, 1]: 1 keeps the target, 0 copies the online network.

        Raises:
            ValueError: ``tau`` outside [0, 1].
        """
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1]. Got {tau!r}")
        targets: list[torch.Tensor] = list(self.target.parameters())
        onlines: list[torch.Tensor] = [p.detach() for p in self.online.parameters()]
        if len(targets) != len(onlines):  # the online network changed after the copy
            raise ValueError(
                f"online and target must have the same parameters; got {len(onlines)} online "
                f"and {len(targets)} target parameters")
        if not targets or tau == 1.0:
            return
        # the official code's order of operations (moco-v3 builder.py, dino main_dino.py):
        # target * tau, then + (1 - tau) * online, one foreach op each over all parameters
        torch._foreach_mul_(targets, tau)
        torch._foreach_add_(targets, onlines, alpha=1.0 - tau)


def cosine_momentum(base: float, progress: float, final: float = 1.0) -> float:
    """BYOL's momentum schedule: ``final - (final - base) * (cos(pi * progress) + 1) / 2``.

    Args:
        base: the momentum at the start (BYOL 0.996, MoCo v3 0.99, DINO 0.996).
        progress: the fraction of training done, clamped to [0, 1] (optimizer steps done /
            total steps).
        final: the momentum at the end (1.0 in all three papers).

    Returns:
        ``base`` at progress 0, ``final`` at progress 1, cosine in between.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def update_momentum_pairs(model: nn.Module, tau: float) -> int:
    """Update every :class:`MomentumPair` in ``model.modules()`` with momentum ``tau``.

    Pass the unwrapped model (not a DDP wrapper: its ``module`` is walked all the same, but
    the trainer hands tasks the unwrapped one). Returns how many pairs were updated.
    """
    pairs = [m for m in model.modules() if isinstance(m, MomentumPair)]
    for pair in pairs:
        pair.update(tau)
    return len(pairs)
