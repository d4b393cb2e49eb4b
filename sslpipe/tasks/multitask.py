"""Several pretext tasks on one shared backbone: ``create_task("rotation+simclr")``.

Layout of the multi-task Batch (members in the order of the name):

* ``inputs``: a tuple with one entry per member, each exactly what that member's collator puts
  in its own ``Batch.inputs`` (a tensor, or a tuple of views);
* ``targets``: a dict ``{member: targets}`` holding the members whose targets are not None
  (SimCLR and VICReg have none);
* ``labels``: the dataset labels, once;
* ``meta``: every member's meta with keys prefixed ``"{member}."`` (``"rotation.boxes"``).

The model (:class:`MultiTaskModel`) builds every member with the *same* backbone instance, so
the weights are shared and each member adds only its head; it returns ``{member: outputs}``.
The loss is ``sum_m weights[m] * loss_m`` over the members present in the outputs.

``schedule="sum"`` trains all members every step. ``schedule="alternate"`` trains one member per
step, in name order: the model counts its training forward passes (a buffer, so it is saved
and resumed with the weights) and runs only member ``step % M``; the collator still makes every
member's inputs, so a batch can feed any step. Members not run in a step get no gradient, so
DistributedDataParallel needs ``find_unused_parameters=True`` with this schedule. In eval mode
the model runs every member and the counter does not move.

``MultiTask`` registers itself as the registry's factory of ``+`` names
(:func:`sslpipe.registry.register_multitask`): the registry never imports this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.images import Images, collect
from sslpipe.options import check_choice, make_options
from sslpipe.registry import register_multitask, task_class
from sslpipe.tasks.base import Collator, CollatorOptions, StepInfo, Task

SEPARATOR = "."


@dataclass(frozen=True)
class MultiTaskOptions(CollatorOptions):
    """Options of the multi-task itself (members keep their own).

    Attributes:
        weights: ``{member: weight}`` of the summed loss; a missing member weighs 1.
        schedule: ``"sum"`` (every member every step) or ``"alternate"`` (one per step).
    """

    weights: dict[str, float] = field(default_factory=dict)
    schedule: str = "sum"

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, ("sum", "alternate"))
        for key, value in self.weights.items():
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"weights[{key!r}] must be a number >= 0. Got {value!r}")


class MultiCollator(Collator):
    """Runs every member's collator on the same images (see the module docstring for layout).

    Images are collected (and decoded) once, at the largest minimum size of the members, and
    each member's host stage draws its parameters from one shared generator in member order;
    the device stage hands each member its own pixels and parameters back.
    """

    options: MultiTaskOptions

    def __init__(self, options: MultiTaskOptions, members: dict[str, Task]) -> None:
        super().__init__(options)
        self.members = members
        self.min_batch_size = max(  # type: ignore[misc]
            t.collator.min_batch_size for t in members.values())

    def host_stage(self, samples: Any, generator: torch.Generator | None = None) -> HostBatch:
        # decoded once for every member (a lazily decoded JPEG would be decoded per member)
        images = collect(samples, min_size=self.min_input_size(),
                         max_pixels=self.options.max_pixels)
        return self.sized_host(images, generator if generator is not None else self.generator())

    def min_input_size(self) -> tuple[int, int]:
        h, w = 1, 1
        for task in self.members.values():
            size = task.collator.min_input_size()
            mh, mw = (size, size) if isinstance(size, int) else size
            h, w = max(h, mh), max(w, mw)
        return (h, w)

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        pixels, meta = {}, {}
        for name, task in self.members.items():
            host = task.collator.sized_host(images, generator)
            pixels.update({f"{name}{SEPARATOR}{k}": v for k, v in host.pixels.items()})
            meta.update({f"{name}{SEPARATOR}{k}": v for k, v in host.meta.items()})
        return HostBatch(pixels, images.labels, meta)

    def make_device(self, host: HostBatch) -> Batch:
        inputs, targets, meta = [], {}, {}
        labels = None
        for name, task in self.members.items():
            prefix = f"{name}{SEPARATOR}"
            own = HostBatch({k[len(prefix):]: v for k, v in host.pixels.items()
                             if k.startswith(prefix)}, host.labels,
                            {k[len(prefix):]: v for k, v in host.meta.items()
                             if k.startswith(prefix)}, host.size)
            batch = task.collator.sized_device(own)
            inputs.append(batch.inputs)
            if batch.targets is not None:
                targets[name] = batch.targets
            meta.update({f"{prefix}{k}": v for k, v in batch.meta.items()})
            labels = batch.labels
        return Batch(tuple(inputs), targets, labels, meta,  # type: ignore[arg-type]
                     size=host.size)


@register_multitask
class MultiTask(Task):
    """Members joined by ``+`` on one shared backbone (see the module docstring).

    Args:
        name: member names joined with ``+`` (each registered, none twice).
        options: ``weights`` and ``schedule`` (:class:`MultiTaskOptions`); a dict under a
            member's name holds that member's own options; every other option is passed to
            each member that has it (``size``, ``seed``, ``mean``, ...) and must fit at least one.
    """

    Options = MultiTaskOptions

    def __init__(self, name: str, **options: Any) -> None:
        names = name.split("+")
        if len(names) < 2 or not all(names) or len(set(names)) != len(names):
            raise ValueError(
                f"a multi-task name joins two or more different task names with '+'. Got {name!r}"
            )
        classes = {n: task_class(n) for n in names}
        own: dict[str, Any] = {k: options.pop(k) for k in ("weights", "schedule") if k in options}
        per_member = {n: options.pop(n) for n in names if n in options}
        for n, value in per_member.items():
            if not isinstance(value, dict):
                raise ValueError(f"options for member {n!r} must be a dict. Got {value!r}")
        unknown_weights = sorted(set(own.get("weights", {})) - set(names))
        if unknown_weights:
            raise ValueError(
                f"weights: {', '.join(unknown_weights)} not among the members {', '.join(names)}"
            )
        fields = {n: {f.name for f in dataclasses.fields(c.Options)} for n, c in classes.items()}
        for key in options:
            if not any(key in f for f in fields.values()):
                raise ValueError(
                    f"option {key!r} fits no member of {name!r} (nor 'weights', 'schedule', or "
                    f"a member name with a dict of options)"
                )
        self.members: dict[str, Task] = {}
        for n, cls in classes.items():
            member_options = {k: v for k, v in options.items() if k in fields[n]}
            member_options.update(per_member.get(n, {}))
            self.members[n] = cls(**member_options)
        base = {k: v for k, v in options.items() if k in ("seed", "generator", "mean", "std")}
        self.name = name  # type: ignore[misc]
        self.options = make_options(MultiTaskOptions, {**base, **own}, owner=f"task {name!r}")
        self.collator = MultiCollator(self.options, self.members)
        self.min_batch_size = max(t.min_batch_size for t in self.members.values())  # type: ignore[misc]
        self.sync_bn = any(getattr(t, "sync_bn", False)  # type: ignore[misc]
                           for t in self.members.values())

    def build(self, backbone: nn.Module) -> nn.Module:
        return MultiTaskModel(backbone, {n: t.build(backbone) for n, t in self.members.items()},
                              self.options.schedule)

    def loss(self, outputs: dict[str, Any], batch: Batch) -> torch.Tensor:
        total: torch.Tensor | None = None
        for name in self._present(outputs):
            term = self.options.weights.get(name, 1.0) * self.member_loss(name, outputs, batch)
            total = term if total is None else total + term
        return total  # type: ignore[return-value]

    def begin_step(self, info: StepInfo) -> None:
        """Every member's schedule (each sees the same step)."""
        for member in self.members.values():
            member.begin_step(info)

    def end_step(self, model: nn.Module, info: StepInfo) -> None:
        """Every member's update after the optimizer step (momentum teachers follow their
        online networks), each given its own model (``model.members[name]``)."""
        members = getattr(model, "members", None)
        if not isinstance(members, nn.ModuleDict):
            raise ValueError("model must be the MultiTaskModel this task built. Got "
                             f"{type(model).__name__}")
        for name, member in self.members.items():
            member.end_step(members[name], info)

    def member_loss(self, name: str, outputs: dict[str, Any], batch: Batch) -> torch.Tensor:
        """The unweighted loss of member ``name``."""
        return self.members[name].loss(outputs[name], self.member_batch(batch, name))

    def metrics(self, outputs: dict[str, Any], batch: Batch) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name in self._present(outputs):
            sub = self.member_batch(batch, name)
            member = self.members[name]
            out[f"{name}{SEPARATOR}loss"] = member.loss(outputs[name], sub).detach()
            out.update({f"{name}{SEPARATOR}{k}": v
                        for k, v in member.metrics(outputs[name], sub).items()})
        return out

    def probe_views(self, outputs: Any, batch: Batch) -> list[Batch]:
        """The members' own batches, of the members that ran (the keys of ``outputs``) in the
        order they ran: the backbone's first features are the first member's, whose rows
        ``meta["source"]`` maps to images (``"rotation.source"`` in the multi-task Batch)."""
        return [self.member_batch(batch, name) for name in self._present(outputs)]

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        rows = []
        for name, member in self.members.items():
            for caption, images in member.visualize(self.member_batch(batch, name), max_images):
                rows.append((f"{name}: {caption}", images))
        return rows

    def member_batch(self, batch: Batch, name: str) -> Batch:
        """Member ``name``'s own Batch, taken out of a multi-task Batch."""
        if name not in self.members:
            raise ValueError(f"name must be one of {', '.join(self.members)}. Got {name!r}")
        index = list(self.members).index(name)
        prefix = f"{name}{SEPARATOR}"
        targets = batch.targets.get(name) if isinstance(batch.targets, dict) else None
        meta = {k[len(prefix):]: v for k, v in batch.meta.items() if k.startswith(prefix)}
        inputs = batch.inputs[index] if isinstance(batch.inputs, tuple) else batch.inputs
        return Batch(inputs, targets, batch.labels, meta)

    def _present(self, outputs: dict[str, Any]) -> list[str]:
        if not isinstance(outputs, dict) or not outputs:
            raise ValueError(
                f"outputs must be the dict {{member: outputs}} of MultiTaskModel. Got {outputs!r}"
            )
        unknown = sorted(set(outputs) - set(self.members))
        if unknown:
            raise ValueError(f"outputs: unknown member(s) {', '.join(unknown)}")
        return [n for n in self.members if n in outputs]

    def __repr__(self) -> str:
        members = ", ".join(f"{n}={t.options}" for n, t in self.members.items())
        return f"MultiTask({self.name!r}, {self.options}, {members})"


class MultiTaskModel(nn.Module):
    """One shared backbone, one model per member; ``forward(inputs) -> {member: outputs}``.

    ``inputs`` is the multi-task ``Batch.inputs`` (one entry per member). With
    ``schedule="alternate"`` a training forward runs only member ``step % M`` and advances
    ``step`` (a buffer).
    """

    def __init__(self, backbone: nn.Module, members: dict[str, nn.Module], schedule: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.members = nn.ModuleDict(members)
        self.schedule = schedule
        self.step: torch.Tensor
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        # the buffer's value on the host, read once (after construction or a load): picking
        # the member must not wait for the device every step
        self._host_step: int | None = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_step = None

    def forward(self, inputs: tuple[Any, ...]) -> dict[str, Any]:
        names = list(self.members)
        if not isinstance(inputs, (tuple, list)) or len(inputs) != len(names):
            raise ValueError(
                f"inputs must be a tuple of {len(names)} entries (one per member: "
                f"{', '.join(names)}). Got {type(inputs).__name__}"
            )
        active = range(len(names))
        if self.schedule == "alternate" and self.training:
            if self._host_step is None:
                self._host_step = int(self.step)
            active = range(self._host_step % len(names), self._host_step % len(names) + 1)
            self._host_step += 1
            self.step += 1
        return {names[i]: self.members[names[i]](inputs[i]) for i in active}
