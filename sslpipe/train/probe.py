"""Online linear probe: a linear classifier on detached backbone features, trained alongside.

As in solo-learn, the probe reads the pooled features the backbone produced for the pretext
task (no extra forward pass), detached so that no gradient reaches the backbone, and has its
own SGD optimizer. Its accuracy tracks representation quality during pretraining at almost no
cost. It runs when batches carry dataset labels and the number of classes is known
(``config.num_classes``, the loader's ``num_classes`` or the manifest's ``classes``).

Feature rows are matched to labels directly (``N == B``) or through ``batch.meta["source"]``
(the source image of each row the backbone saw: rotation's four rotated copies, the two views
of SimCLR and VICReg, jigsaw's tiles, relative patch's patches, counting's images and tiles);
the probe of a task that shows the backbone parts of images is then a part-level one. A task
that reads the last feature map (colorization, context encoder) is probed on that map averaged
over its positions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch
from sslpipe.tasks.heads import feature_dim

__all__ = ["OnlineProbe", "probe_classes"]


class OnlineProbe:
    """Linear probe over ``backbone``'s pooled ``B x num_features`` output (disabled if
    ``num_classes`` is 0)."""

    def __init__(self, backbone: nn.Module, num_classes: int, lr: float, device: torch.device,
                 distributed: bool) -> None:
        self.backbone, self.num_classes = backbone, num_classes
        self.features: torch.Tensor | None = None
        self.unmatched: str | None = None  # why the last step could not probe
        self.linear: nn.Module | None = None
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if num_classes <= 0:
            return
        self.linear = nn.Linear(feature_dim(backbone), num_classes).to(device)
        self.model = self.linear
        if distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.linear, device_ids=ids)
        self.optimizer = torch.optim.SGD(self.linear.parameters(), lr=lr, momentum=0.9)

    @classmethod
    def create(cls, config: Any, backbone: nn.Module, loader: Any, info: Any) -> OnlineProbe:
        """The probe of a run (disabled when ``config.probe`` is off or classes are unknown)."""
        classes = probe_classes(config, loader) if config.probe else 0
        return cls(backbone, classes, config.probe_lr, info.device, info.distributed)

    @property
    def enabled(self) -> bool:
        return self.model is not None

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Record the backbone's first pooled output of the forward pass run inside the block;
        for a task that reads the last feature map instead (colorization, context encoder),
        that map averaged over its positions."""
        self.features = None
        if not self.enabled:
            yield
            return
        pooled: list[torch.Tensor] = []

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.features is None and isinstance(output, torch.Tensor) and output.ndim == 2:
                self.features = output.detach()

        def last_stage(module: nn.Module, args: Any, output: Any) -> None:
            if not pooled and isinstance(output, torch.Tensor) and output.ndim in (3, 4):
                # B x C x h x w (CNN) or B x N x C (tokens): an average per image
                pooled.append((output.mean((2, 3)) if output.ndim == 4
                               else output.mean(1)).detach())

        handles = [self.backbone.register_forward_hook(hook)]
        stage = _last_stage(self.backbone)
        if stage is not None:
            handles.append(stage.register_forward_hook(last_stage))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            if self.features is None and pooled:
                self.features = pooled[0]

    def step(self, views: Batch | list[Batch]) -> dict[str, torch.Tensor]:
        """One SGD step on the captured features; ``{"loss", "acc"}`` (0-dim tensors on the
        device, not read here) or ``{}`` when it can't (``unmatched`` says why).

        ``views``: the batch, or the batches the features' labels may come from
        (``task.probe_views(outputs, batch)``); the first whose rows match is used."""
        pair = self._pair(views)
        if pair is None or self.optimizer is None or self.model is None:
            return {}
        features, labels = pair
        logits = self.model(features)
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss.detach(), "acc": acc}

    def evaluate(self, views: Batch | list[Batch]) -> dict[str, torch.Tensor]:
        """Accuracy on the captured features (no update), a 0-dim tensor on the device."""
        pair = self._pair(views)
        if pair is None or self.linear is None:
            return {}
        with torch.no_grad():
            logits = self.linear(pair[0])
        return {"acc": (logits.argmax(1) == pair[1]).float().mean()}

    def train(self) -> None:
        if self.model is not None:
            self.model.train()

    def state_dict(self) -> dict[str, Any]:
        if self.linear is None or self.optimizer is None:
            return {}
        return {"linear": self.linear.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.linear is not None and self.optimizer is not None and state:
            self.linear.load_state_dict(state["linear"])
            self.optimizer.load_state_dict(state["optimizer"])

    def _pair(self, views: Batch | list[Batch]) -> tuple[torch.Tensor, torch.Tensor] | None:
        features = self.features
        self.unmatched = None
        if not self.enabled:
            return None
        if features is None:
            self.unmatched = "the backbone gave no pooled features to probe"
            return None
        for batch in [views] if isinstance(views, Batch) else views:
            labels = batch.labels
            if labels is None:
                continue
            if features.shape[0] == labels.shape[0]:
                return features.float(), labels
            source = batch.meta.get("source")
            if source is not None and source.shape[0] == features.shape[0]:
                return features.float(), labels[source.to(labels.device, non_blocking=True)]
        self.unmatched = (f"no label for each of the {features.shape[0]} feature rows (the batch "
                          "has no labels, or no meta['source'] mapping the rows to images)")
        return None


def _last_stage(backbone: nn.Module) -> nn.Module | None:
    """The module that makes a timm backbone's last feature map (``feature_info``)."""
    info = getattr(backbone, "feature_info", None)
    try:
        name = info[-1]["module"] if info else None
        return backbone.get_submodule(name) if name else None
    except (AttributeError, KeyError, TypeError):
        return None


def probe_classes(config: Any, loader: Any) -> int:
    """Number of probe classes: config, then the loader, then the manifest (0 if unknown)."""
    if config.num_classes:
        return int(config.num_classes)
    classes = getattr(loader, "num_classes", 0)
    if classes:
        return int(classes)
    if config.data is not None:
        from sslpipe.data.shard_source import load_manifest

        manifest = load_manifest(config.data)
        if manifest.get("labeled", True):
            return len(manifest.get("classes") or [])
    return 0
