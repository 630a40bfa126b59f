"""Bad input, end to end through ``python -m lit_grok fit``: exit status 2, one line naming the key, no traceback."""

import json
import os
import shutil
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
    ("--trainer.max_step=100", "unrecognized arguments: --trainer.max_step=100 (did you mean --trainer.max_steps?)"),
    (f"{OPT}lr=fast", "model.init_args.optimizer.init_args.lr: expected float or Tensor, got 'fast'"),
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
    """The same, as a user meets it: a process, its exit status and its whole stderr, for a key refused by the
    parser and a value refused when the model is built (a branch's missing checkpoint). Every other bad value
    takes the same path in-process (above); each process here costs seconds of imports."""
    grok = ["-c", str(ROOT / "configs/cpu/grok.yaml"), BAD[-3][0]]
    missing = tmp_path / "no.ckpt"
    branch = ["-c", str(ROOT / "configs/cpu/ungrok.yaml"), f"--model.init_args.init_from={missing}"]
    cases = [(grok, f"error: {BAD[-3][1]}"), (branch, f"error: model: init_from: no checkpoint at '{missing}'.")]
    runs = [subprocess.Popen([sys.executable, "-m", "lit_grok", "fit", *args, f"--trainer.logger.init_args.save_dir={tmp_path}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
            for args, _ in cases]
    for (args, expected), run in zip(cases, runs):
        _, err = run.communicate(timeout=240)
        assert run.returncode == 2, (args, err)
        assert "Traceback" not in err and len(_one_line(err)) == 1, (args, err)
        assert _one_line(err)[0].startswith(expected), (args, _one_line(err)[0])


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


def test_a_run_is_quiet_and_ends_saying_where_it_is_and_what_happened(tmp_path):
    """As a newcomer sees it: lit_grok's lines, none of Lightning's info; --verbose brings those back."""
    args = [sys.executable, "-m", "lit_grok", "fit", "-c", str(ROOT / "configs/cpu/grok.yaml"), "--data.init_args.modulus=11",
            "--trainer.max_steps=100", "--trainer.check_val_every_n_epoch=50", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240)
    verbose = subprocess.run(args + ["--verbose"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240)
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr
    for noise in ("Seed set to", "Tip:", "GPU available", "`Trainer.fit` stopped"):
        assert noise not in quiet.stdout + quiet.stderr
    assert "Seed set to" in verbose.stdout + verbose.stderr and "GPU available" in verbose.stdout + verbose.stderr
    run_dir = tmp_path / "cpu-grok" / "version_0"
    lines = quiet.stdout.strip().splitlines()
    assert lines[-3] == f"run: {run_dir}"
    assert lines[-2].strip().startswith("memorised at step 50; ") and "at step 100; stopped at max_steps=100" in lines[-2]
    assert lines[-1].strip().startswith(f"curves: {run_dir / 'curves.png'}")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["step"] == 100 and result["events/memorised_step"] == 50 and "val/acc" in result
    assert result["seconds"] > 0 and "resumed_from_step" not in result


def test_mistakes_end_in_one_line_that_points_to_the_fix(tmp_path, capsys):
    from lit_grok.cli import main

    def refused(args):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit:
            main(args)
        err = capsys.readouterr().err
        assert exit.value.code == 2 and len(_one_line(err)) == 1 and "Traceback" not in err, err
        return _one_line(err)[0]

    sweep_file, run_file = ROOT / "configs/cpu/efficiency.yaml", ROOT / "configs/cpu/grok.yaml"
    assert refused(["fit", "--config", str(sweep_file)]) == \
        f"error: {sweep_file} is a sweep file (it has grids): run it with `python -m lit_grok sweep --config {sweep_file}`."
    assert refused(["sweep", "--config", str(run_file)]) == \
        f"error: {run_file} is a run file (trainer/model/data, no grids): run it with `python -m lit_grok fit --config {run_file}`."
    assert "invalid choice: 'predict'" in refused(["predict", "-c", str(run_file)])
    (tmp_path / "configs" / "cpu").mkdir(parents=True)  # the hint looks for the run file under ./configs
    shutil.copy(ROOT / "configs/cpu/ungrok_pretrain.yaml", tmp_path / "configs/cpu/")
    assert refused(["fit", "-c", str(ROOT / "configs/cpu/ungrok.yaml"), f"--trainer.logger.init_args.save_dir={tmp_path}"]) \
        == ("error: model: init_from: no checkpoint at 'logs/cpu-ungrok-pretrain/version_0/checkpoints/last.ckpt'; it is "
            "written by `python -m lit_grok fit --config configs/cpu/ungrok_pretrain.yaml`: run that first.")
    finished = _tiny_checkpoint(tmp_path / "runs", 13)  # a run at max_steps=1
    files = sorted(p.name for p in finished.parents[1].iterdir())
    assert refused(["fit", "-c", str(run_file), "--data.init_args.modulus=13", "--trainer.max_steps=1",
                    f"--ckpt_path={finished}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"]) == \
        f"error: ckpt_path: '{finished}' is already at step 1 and trainer.max_steps is 1: raise --trainer.max_steps to continue."
    assert sorted(p.name for p in finished.parents[1].iterdir()) == files  # nothing written


def test_help_lists_the_commands_that_exist(capsys):
    from lit_grok.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0 and "predict" not in out and "lit-grok" in out
    assert all(f"\n  {command} " in out for command in ("fit", "validate", "test", "sweep"))


def test_reports_explain_themselves_and_refuse_folders_without_runs(tmp_path, capsys):
    from lit_grok.reports import curves, efficiency, main

    with pytest.raises(SystemExit) as exit:
        main(efficiency.report, ["--help"])
    assert exit.value.code == 0 and "usage: python -m lit_grok.reports.efficiency FOLDER" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        main(curves.report, [str(tmp_path)])
    assert exit.value.code == 2 and capsys.readouterr().err.startswith(f"error: {tmp_path} holds no finished runs")
    assert list(tmp_path.iterdir()) == []  # nothing written into it
    from lit_grok.reports import compare

    with pytest.raises(SystemExit) as exit:
        compare.main(["--help"])
    assert exit.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m lit_grok.reports.compare OUT")
    for argv, start in (([], "usage:"), ([str(tmp_path / "out"), str(tmp_path / "nowhere")], "error: ")):
        with pytest.raises(SystemExit) as exit:
            compare.main(argv)
        err = capsys.readouterr().err
        assert exit.value.code == 2 and err.startswith(start) and len(err.strip().splitlines()) == 1, err
