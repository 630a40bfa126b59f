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

from lit_grok.data import task_mismatch

NET_PREFIX = "net."


def read_checkpoint(path: str, option: str = "init_from") -> dict[str, Any]:
    """A Lightning checkpoint as a dict, read without running code (``weights_only``); ValueError (one line,
    prefixed by the ``option`` that named the file) when it is missing, unreadable or not a checkpoint."""
    if not Path(path).is_file():
        writer = config_writing(path)
        raise ValueError(f"{option}: no checkpoint at {path!r}" + (
            f"; it is written by `python -m lit_grok fit --config {writer}`: run that first." if writer else "."))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a truncated or foreign file, or one that would run code: say which, in one line
        reason = ("it holds objects other than tensors and plain values, which lit_grok does not unpickle"
                  if "weights_only" in str(error) else "truncated, or not a file that torch.save wrote")
        raise ValueError(f"{option}: {path!r} is not a readable checkpoint ({reason}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{option}: {path!r} is not a Lightning checkpoint (no state_dict).")
    return checkpoint


def save_network(path: str, out: Path, record: Optional[dict[str, Any]] = None) -> Path:
    """Writes the network of the checkpoint at ``path`` to ``out`` with its task and config, and ``record`` (plain
    values: what the run measured), but no optimiser or training state: all a branch needs (``init_from``),
    about a third of the checkpoint's size, small enough to keep beside a results page."""
    checkpoint = read_checkpoint(path)
    kept = {"state_dict": {k: v.clone() for k, v in checkpoint["state_dict"].items() if k.startswith(NET_PREFIX)}}
    kept.update({key: checkpoint[key] for key in ("hyper_parameters", "datamodule_hyper_parameters")
                 if key in checkpoint})
    if record is not None:
        kept["record"] = record
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(kept, partial)
    partial.replace(out)  # never a truncated file under the final name
    return out


def config_writing(path: str, configs: Path = Path("configs")) -> Optional[str]:
    """The run file under ``configs`` whose run writes the checkpoint ``path``
    (``<save_dir>/<name>/version_N/checkpoints/<file>``, its logger's save_dir and name), if there is one."""
    parts = Path(path).parts
    if len(parts) < 5 or parts[-2] != "checkpoints" or not configs.is_dir():
        return None
    import yaml

    save_dir, name = str(Path(*parts[:-4])), parts[-4]
    for config in sorted(configs.rglob("*.yaml")):
        try:
            logger = ((yaml.safe_load(config.read_text()) or {}).get("trainer") or {}).get("logger") or {}
        except (yaml.YAMLError, AttributeError):
            continue
        args = logger.get("init_args") or {} if isinstance(logger, dict) else {}
        if args.get("name") == name and str(Path(args.get("save_dir", "logs"))) == save_dir:
            return str(config)
    return None


def network_state(checkpoint: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
    """The network's parameters in a single-run (GrokkingModule) checkpoint, without the ``net.`` prefix."""
    state = {k[len(NET_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(NET_PREFIX)}
    if not state:
        raise ValueError(f"init_from: {path!r} holds no single-run network (no '{NET_PREFIX}*' weights).")
    return state


def check_shapes(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: str,
                 option: str = "init_from") -> None:
    """A saved state must have the config's parameter names and shapes; refused with the first difference."""
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"{option}: the network in {path!r} has another architecture than the config's "
                         f"(missing there: {missing[:3]}, unknown here: {extra[:3]}).")
    for name, value in own.items():
        if value.shape != state[name].shape:
            raise ValueError(f"{option}: the network in {path!r} differs from the config's: {name} is "
                             f"{list(state[name].shape)} there and {list(value.shape)} here.")


def load_network(net: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Copies ``state`` into ``net``; a network of another shape is refused with the first difference."""
    check_shapes(net.state_dict(), state, path)
    net.load_state_dict(state)


def task_of(checkpoint: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The task a checkpoint was trained on (operation, modulus, random_labels), if its DataModule saved it."""
    for value in checkpoint.values():
        if isinstance(value, dict) and "operation" in value and "modulus" in value:
            return {k: value[k] for k in ("operation", "modulus", "random_labels") if k in value}
        if isinstance(value, dict) and isinstance(value.get("members"), list) and value["members"]:
            return task_of({"member": value["members"][0]})
    return None


def check_task(task: Optional[dict[str, Any]], datamodule: Any, path: str, option: str = "init_from") -> None:
    """A branch or a resumed run must train on the task its network learned: same operation and modulus."""
    mismatch = None if task is None else task_mismatch(task, datamodule, ("operation", "modulus"))
    if mismatch:
        raise ValueError(f"{option}: {path!r} was trained on another task ({mismatch}).")


class Branched:
    """What a module that may start from a checkpoint (``init_from``) checks once its data is known."""

    init_from: Optional[str] = None
    init_task: Optional[dict[str, Any]] = None

    def check_data(self, datamodule: Any) -> None:
        """Called by the CLI once the config is built: a branch trains on the task its network learned."""
        if self.init_from is not None:
            check_task(self.init_task, datamodule, self.init_from)


def read_training_checkpoint(path: str, option: str) -> dict[str, Any]:
    """A checkpoint a run can resume from: ``read_checkpoint``'s, with the training state (``global_step``)."""
    checkpoint = read_checkpoint(path, option)
    if "global_step" not in checkpoint:
        raise ValueError(f"{option}: {path!r} holds weights but no training state (no global_step); start a new "
                         f"run from it with --model.init_args.init_from instead.")
    return checkpoint


def stale_callbacks(checkpoint: dict[str, Any], callbacks: list[Any]) -> list[str]:
    """The callbacks whose state a checkpoint holds but this run cannot take back, because it lacks them or
    has them with other settings (Lightning keys a callback's state by its class and settings): their names,
    with the settings they were saved under."""
    own = {getattr(callback, "state_key", None) for callback in callbacks}
    return [key for key in checkpoint.get("callbacks", {}) if key not in own]


def check_resume(checkpoint: dict[str, Any], path: str, model: nn.Module, datamodule: Any) -> None:
    """A checkpoint given to ``--ckpt_path`` (as ``read_training_checkpoint`` read it) must hold this config's
    network and task: refused in one line before Lightning would fail deep inside its restore."""
    check_shapes(model.state_dict(), checkpoint["state_dict"], path, "ckpt_path")
    check_task(task_of(checkpoint), datamodule, path, "ckpt_path")


def load_optimizer_state(optimizer: torch.optim.Optimizer, checkpoint_state: dict[str, Any]) -> None:
    """Loads an optimiser's moments and step counts from a checkpoint, keeping this run's hyperparameters
    (learning rate, weight decay, betas...): a branch may change them, and they must not be overwritten."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if len(checkpoint_state["param_groups"]) != len(groups):
        raise ValueError("init_optimizer: the checkpoint's optimiser has another number of parameter groups.")
    optimizer.load_state_dict(checkpoint_state)
    for group, settings in zip(optimizer.param_groups, groups):
        group.update(settings)
