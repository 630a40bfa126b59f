"""Branching: a new run that starts from a trained network's weights (and, if asked, its optimiser state).

The paper's ungrokking protocol trains one network on every pair and then continues training it on many
smaller subsets, at several weight decays. Each continuation is a run of its own: a fresh step counter,
its own TensorBoard folder, its own data. That is a *weights-only start* (``init_from``), unlike a resume
(``--ckpt_path``), which continues the checkpoint's run with its step, optimiser and callbacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

NET_PREFIX = "net."


def read_checkpoint(path: str) -> dict[str, Any]:
    """A Lightning checkpoint as a dict; ValueError (one line) when it is missing or not a checkpoint."""
    if not Path(path).is_file():
        raise ValueError(f"init_from: no checkpoint at {path!r}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, in one line
        raise ValueError(f"init_from: {path!r} is not a readable checkpoint ({type(error).__name__}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"init_from: {path!r} is not a Lightning checkpoint (no state_dict).")
    return checkpoint


def network_state(checkpoint: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
    """The network's parameters in a single-run (GrokkingModule) checkpoint, without the ``net.`` prefix."""
    state = {k[len(NET_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(NET_PREFIX)}
    if not state:
        raise ValueError(f"init_from: {path!r} holds no single-run network (no '{NET_PREFIX}*' weights).")
    return state


def load_network(net: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Copies ``state`` into ``net``; a network of another shape is refused with the first difference."""
    own = net.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"init_from: the network in {path!r} has another architecture than the config's "
                         f"(missing there: {missing[:3]}, unknown here: {extra[:3]}).")
    for name, value in own.items():
        if value.shape != state[name].shape:
            raise ValueError(f"init_from: the network in {path!r} differs from the config's: {name} is "
                             f"{list(state[name].shape)} there and {list(value.shape)} here.")
    net.load_state_dict(state)


def task_of(checkpoint: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The task a checkpoint was trained on (operation, modulus, random_labels), if its DataModule saved it."""
    for value in checkpoint.values():
        if isinstance(value, dict) and "operation" in value and "modulus" in value:
            return {k: value[k] for k in ("operation", "modulus", "random_labels") if k in value}
        if isinstance(value, dict) and isinstance(value.get("members"), list) and value["members"]:
            return task_of({"member": value["members"][0]})
    return None


def check_task(task: Optional[dict[str, Any]], datamodule: Any, path: str) -> None:
    """The branch must train on the task its network learned: same operation and modulus."""
    if task is None:
        return
    for key in ("operation", "modulus"):
        if key in task and hasattr(datamodule, key) and task[key] != getattr(datamodule, key):
            raise ValueError(f"init_from: {path!r} was trained with {key}={task[key]!r}, "
                             f"but the config's data has {key}={getattr(datamodule, key)!r}.")


def load_optimizer_state(optimizer: torch.optim.Optimizer, checkpoint_state: dict[str, Any]) -> None:
    """Loads an optimiser's moments and step counts from a checkpoint, keeping this run's hyperparameters
    (learning rate, weight decay, betas...): a branch may change them, and they must not be overwritten."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if len(checkpoint_state["param_groups"]) != len(groups):
        raise ValueError("init_optimizer: the checkpoint's optimiser has another number of parameter groups.")
    optimizer.load_state_dict(checkpoint_state)
    for group, settings in zip(optimizer.param_groups, groups):
        group.update(settings)
