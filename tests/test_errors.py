"""Bad input, end to end through ``python -m lit_grok fit``: exit status 2, one line naming the key, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
OPT = "--model.init_args.optimizer.init_args."

# (override, the line the user must see after "error: ")
BAD = [
    (f"{OPT}lr=0", "model: optimizer: lr must be > 0, got 0.0."),
    (f"{OPT}lr=-1", "model: optimizer: Invalid learning rate: -1.0"),
    (f"{OPT}weight_decay=-0.5", "model: optimizer: Invalid weight_decay value: -0.5"),
    (f"{OPT}betas=[1.5,0.98]", "model: optimizer: Invalid beta parameter at index 0: 1.5"),
    ("--trainer.max_steps=-5", "trainer.max_steps must be -1 (no limit) or >= 1, got -5."),
    ("--trainer.max_steps=0", "trainer.max_steps must be -1 (no limit) or >= 1, got 0."),
    ("--trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch must be >= 1"),
    ("--data.init_args.modulus=abc", "data.init_args.modulus: expected int or null, got 'abc'"),
    ("--data.init_args.modulus=1", "data: modulus must be >= 2"),
    ("--data.init_args.batch_size=-2", "data: batch_size must be a positive integer or null (full batch), got -2."),
    ("--data.init_args.train_fraction=1.5", "data: train_fraction must lie in (0, 1], got 1.5."),
    ("--data.init_args.operation=pow", "data: unknown operation 'pow'; valid operations are: add"),
    ("--model.init_args.warmup_steps=x", "model.init_args.warmup_steps: expected int, got 'x'"),
    ("--model.init_args.warmup_steps=-3", "model: warmup_steps must be >= 0, got -3."),
    ("--trainer.max_stepz=3", "unrecognized arguments: --trainer.max_stepz=3"),
]


def _one_line(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not line.startswith("Seed set")]


@pytest.mark.parametrize("override, expected", BAD, ids=[override for override, _ in BAD])
def test_bad_values_end_in_one_line_naming_the_key(override, expected, tmp_path, monkeypatch, capsys):
    from lit_grok.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["fit", "-c", str(ROOT / "configs/cpu/grok.yaml"), override, f"--trainer.logger.init_args.save_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "Traceback" not in err and len(_one_line(err)) == 1, (override, err)
    assert _one_line(err)[0].startswith(f"error: {expected}"), (override, err)


def test_bad_values_through_python_m_exit_with_status_2_and_no_traceback(tmp_path):
    """The same, as a user meets it: a process, its exit status and its whole stderr (a parse error, a value
    refused when the model is built, an unknown key)."""
    cases = [BAD[0], BAD[7], BAD[-1]]
    runs = [subprocess.Popen([sys.executable, "-m", "lit_grok", "fit", "-c", str(ROOT / "configs/cpu/grok.yaml"),
                              override, f"--trainer.logger.init_args.save_dir={tmp_path}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
            for override, _ in cases]
    for (override, expected), run in zip(cases, runs):
        _, err = run.communicate(timeout=240)
        assert run.returncode == 2, (override, err)
        assert "Traceback" not in err and len(_one_line(err)) == 1, (override, err)
        assert _one_line(err)[0].startswith(f"error: {expected}"), (override, _one_line(err)[0])


def _tiny_checkpoint(folder: Path, modulus: int) -> Path:
    """A real Lightning checkpoint of configs/cpu/grok.yaml's network at P=``modulus``, after one step."""
    from lit_grok.cli import main

    main(["fit", "-c", str(ROOT / "configs/cpu/grok.yaml"), f"--data.init_args.modulus={modulus}",
          "--trainer.max_steps=1", f"--trainer.logger.init_args.save_dir={folder}", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false"])
    return next(folder.rglob("last.ckpt"))


def test_bad_checkpoints_end_in_one_line_naming_the_file_and_what_is_wrong(tmp_path, capsys):
    import os as os_

    from lit_grok.cli import main

    good = _tiny_checkpoint(tmp_path / "runs", 13)
    (tmp_path / "truncated.ckpt").write_bytes(good.read_bytes()[:4000])
    (tmp_path / "text.ckpt").write_text("not a checkpoint")

    class Payload:  # what a checkpoint that runs code holds
        def __reduce__(self):
            return (os_.system, ("echo pwned",))

    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "evil.ckpt")
    torch.save({"state_dict": torch.load(good, weights_only=True)["state_dict"]}, tmp_path / "weights.ckpt")
    cases = [
        ("nowhere.ckpt", [], "ckpt_path: no checkpoint at 'nowhere.ckpt'."),
        ("truncated.ckpt", [], "ckpt_path: 'truncated.ckpt' is not a readable checkpoint (truncated, or not a file"),
        ("text.ckpt", [], "ckpt_path: 'text.ckpt' is not a readable checkpoint (truncated"),
        ("evil.ckpt", [], "ckpt_path: 'evil.ckpt' is not a readable checkpoint (it holds objects other than tensors"),
        ("weights.ckpt", [], "ckpt_path: 'weights.ckpt' holds weights but no training state"),
        (str(good), ["--data.init_args.modulus=11"], f"ckpt_path: the network in '{good}' differs from the config's: "
                                                     "net.embed.weight is [14, 128] there and [12, 128] here."),
        (str(good), ["--data.init_args.modulus=13", "--data.init_args.operation=sub"],
         f"ckpt_path: '{good}' was trained on another task (operation='add' there, operation='sub' in the config)."),
    ]
    for path, extra, expected in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit:
            main(["fit", "-c", str(ROOT / "configs/cpu/grok.yaml"), f"--ckpt_path={path}", *extra,
                  f"--trainer.logger.init_args.save_dir={tmp_path / 'resumed'}"])
        err = capsys.readouterr().err
        assert exit.value.code == 2 and "Traceback" not in err and len(_one_line(err)) == 1, (path, err)
        assert _one_line(err)[0].startswith(f"error: {expected}"), (path, err)
    assert not (tmp_path / "resumed").exists()  # nothing was written for a refused checkpoint


def test_a_task_too_large_for_memory_is_refused_before_its_table_is_built():
    from lit_grok.data import ModularArithmeticDataModule, check_size

    with pytest.raises(ValueError, match=r"add with 30011 elements has 900,660,121 pairs: the pair table needs 43.2 GB"):
        ModularArithmeticDataModule("add", 30011, train_fraction=0.3)
    check_size("add", 113, 113 ** 2, None, 10 ** 9)  # P=113 fits in 1 GB
    with pytest.raises(ValueError, match="use a smaller modulus or a batch_size"):
        check_size("add", 1009, 1009 ** 2, None, 10 ** 9)  # every pair's logits at once: 4.1 GB
    check_size("add", 1009, 1009 ** 2, 4096, 10 ** 9)  # in batches it fits
