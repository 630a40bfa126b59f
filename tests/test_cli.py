import importlib.util
from pathlib import Path

import pytest

import torch
import yaml

from lit_grok.cli import main
from lit_grok.execution import _text  # a grid value as the sweep passes it (null, true: JSON)
from lit_grok.sweep import expand, kept_network

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs/trainer").glob("*.yaml"))
CONFIGS = sorted(set((ROOT / "configs").rglob("*.yaml")) - set(PRESETS))


def test_there_are_configs():
    assert ROOT / "configs/grok.yaml" in CONFIGS and ROOT / "configs/cpu/grok.yaml" in CONFIGS


def _is_sweep(path: Path) -> bool:
    return "grids" in yaml.safe_load(path.read_text())


def _init_from(path: Path):
    return ((yaml.safe_load(path.read_text()).get("model") or {}).get("init_args") or {}).get("init_from")


def _pretrained_checkpoint(init_from: str, tmp_path: Path, source: Path = None, args: list = ()) -> Path:
    """The checkpoint of the config whose run a branch starts from (``source`` with ``args``, or the config
    found by its logger's name in ``init_from``), built untrained: the two configs must agree on network
    shape and task."""
    name = Path(init_from).parts[1]  # logs/<name>/version_0/checkpoints/last.ckpt
    source = source or next(p for p in CONFIGS if not _is_sweep(p) and
                            yaml.safe_load(p.read_text())["trainer"]["logger"]["init_args"]["name"] == name)
    cli = main(["-c", str(source), *args, "--trainer.logger=false"], run=False)
    checkpoint = {"state_dict": cli.model.state_dict(), "optimizer_states": [cli.model.configure_optimizers().state_dict()],
                  type(cli.datamodule).__qualname__: cli.datamodule.state_dict()}
    torch.save(checkpoint, tmp_path / "pretrained.ckpt")
    return tmp_path / "pretrained.ckpt"


@pytest.mark.parametrize("path", [p for p in CONFIGS if not _is_sweep(p)], ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_builds(path, tmp_path, capsys):
    branch = [f"--model.init_args.init_from={_pretrained_checkpoint(_init_from(path), tmp_path)}"] if _init_from(path) else []
    if "LocalLearningCoefficient" in path.read_text() and importlib.util.find_spec("devinterp") is None:
        with pytest.raises(SystemExit):  # the optional extra is missing: one line that says how to install it
            main(["-c", str(path), *branch, "--trainer.logger=false"], run=False)
        assert 'needs devinterp (datasets is missing): pip install -e ".[llc]"' in capsys.readouterr().err
        return
    cli = main(["-c", str(path), *branch, "--trainer.logger=false"], run=False)
    assert cli.model.hparams.n_classes == cli.datamodule.n_classes  # linked, never typed twice
    if hasattr(cli.datamodule, "vocab_size"):
        assert cli.model.hparams.vocab_size == cli.datamodule.vocab_size


@pytest.mark.parametrize(
    "override, message",
    [
        (["--data.init_args.operation=pow"], "unknown operation 'pow'; valid operations are: add, sub"),
        (["--data.init_args.train_fraction=null", "--data.init_args.train_size=100000"],
         "train_size must be between 1 and"),
        (["--data.init_args.train_size=10"], "give exactly one of train_size"),
        (["--data.init_args.modulus=1"], "modulus must be >= 2"),
        (["--data.init_args.op_token=true"], "Transformer cannot read this data's 4-token sequences"),
    ],
)
def test_bad_value_is_one_clear_parser_error(override, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["-c", str(ROOT / "configs/cpu/grok.yaml"), *override, "--trainer.logger=false"], run=False)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_div_needs_prime_modulus_at_config_time(capsys):
    with pytest.raises(SystemExit):
        main(["-c", str(ROOT / "configs/cpu/grok.yaml"), "--data.init_args.operation=div",
              "--data.init_args.modulus=12", "--trainer.logger=false"], run=False)
    assert "operation 'div' needs a prime modulus (for inverses), got 12." in capsys.readouterr().err


def test_print_config_reproduces_itself(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(ROOT / "configs/cpu/grok.yaml"), "--print_config"])
    printed = capsys.readouterr().out
    assert "class_path: lit_grok.model.Transformer" in printed or "class_path: lit_grok.Transformer" in printed
    (tmp_path / "printed.yaml").write_text(printed)
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(tmp_path / "printed.yaml"), "--print_config"])
    assert capsys.readouterr().out == printed


@pytest.mark.parametrize("path", [p for p in CONFIGS if _is_sweep(p)], ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_sweep_builds_the_first_run_of_each_grid(path, tmp_path):
    spec = yaml.safe_load(path.read_text())
    assert (ROOT / spec["base"]).is_file()
    for grid in spec["grids"]:
        params = {**spec.get("overrides", {}), **expand([grid])[0]}
        init_from = params.get("model.init_args.init_from") or _init_from(ROOT / spec["base"])
        pretrain = spec.get("pretrain")
        kept = pretrain and kept_network({**pretrain, "weights": ROOT / pretrain.get("weights", "-")},
                                         {key: params[key] for key in pretrain["keys"]})
        if kept:  # the network kept beside the results: the run must build from it
            init_from = kept
        elif "pretrain" in spec:  # the sweep's own pre-training of this run's task
            init_from = _pretrained_checkpoint(init_from, tmp_path, ROOT / spec["pretrain"]["base"],
                                               [f"--{k}={_text(params[k])}" for k in spec["pretrain"]["keys"]])
        elif init_from:
            init_from = _pretrained_checkpoint(init_from, tmp_path)
        if init_from:
            params["model.init_args.init_from"] = str(init_from)
        args = ["-c", str(ROOT / spec["base"]), *[f"--{k}={_text(v)}" for k, v in params.items()],
                "--trainer.logger=false"]
        cli = main(args, run=False)
        if "data.init_args.train_size" in params:
            assert cli.datamodule.train_size == params["data.init_args.train_size"]
        for key, value in params.items():  # such a key sets the base's last callback: the one the sweep means
            if key.startswith("trainer.callbacks.init_args."):
                name = key.rsplit(".", 1)[1]
                assert [getattr(c, name) for c in cli.trainer.callbacks if hasattr(c, name)] == [value], key


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_trainer_presets_compose_with_an_experiment(preset):
    spec = yaml.safe_load(preset.read_text())["trainer"]
    on_cpu = [] if spec["accelerator"] == "cpu" else ["--trainer.accelerator=cpu", "--trainer.devices=1"]
    cli = main(["-c", str(ROOT / "configs/cpu/grok.yaml"), "-c", str(preset), *on_cpu, "--trainer.logger=false"],
               run=False)
    config = cli.config["trainer"]
    for key in ("strategy", "precision", "num_nodes"):  # the preset's values win over the experiment's
        if key in spec:
            assert config[key] == spec[key]
    if not on_cpu:
        assert cli.trainer.num_devices == spec["devices"]
    assert any(type(c).__name__ == "GrokEvents" for c in cli.trainer.callbacks)  # the experiment's callbacks stay


@pytest.mark.parametrize("config", ["configs/cpu/grok.yaml", "configs/cpu/ensemble.yaml"])
def test_sizes_are_linked_from_the_data_to_the_model(config):
    sizes = "--data.init_args.train_fraction=0.5" if "grok" in config else "--data.init_args.train_sizes=[20,30,20,30,20,30]"
    cli = main(["-c", str(ROOT / config), "--data.init_args.modulus=7", sizes, "--trainer.logger=false"], run=False)
    assert (cli.model.hparams.vocab_size, cli.model.hparams.n_classes) == (8, 7)  # P tokens and "=", P classes
    tokens = cli.datamodule.tokens  # [49, 3]; an ensemble takes [K, B, 3]
    logits = cli.model.net(tokens.expand(6, -1, -1) if "ensemble" in config else tokens)
    assert logits.shape[-1] == 7 and logits.shape[-2] == 49  # every pair of Z_7
