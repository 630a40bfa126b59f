import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _tree_status() -> str:
    """What git sees changed or added in the working tree (ignored paths such as logs/ left out)."""
    result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                            capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


@pytest.fixture(autouse=True, scope="session")
def _clean_tree():
    """The suite writes only under temporary folders: it fails if it leaves a file in the working tree."""
    before = set(_tree_status().splitlines())
    yield
    added = sorted(set(_tree_status().splitlines()) - before)
    if added:
        pytest.fail(f"the test suite changed the working tree: {added}")


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_worker():
    """Under pytest-xdist each worker runs one torch thread: two workers on two cores, not four threads."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path):
    """Each test starts from the same global state: one thread, no leaked seed, deterministic off, and a
    temporary folder as the working directory (Lightning writes to it when a run has no logger)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.setattr("sys.argv", ["lit-grok"])  # the CLI is driven by args=[...], not pytest's argv
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    os.environ.pop("PL_GLOBAL_SEED", None)
    os.environ.pop("LIT_GROK_VERBOSE", None)  # a test's --verbose does not make the next one verbose


@pytest.fixture
def tiny_args(tmp_path):
    """CLI overrides that shrink configs/cpu/grok.yaml to a model that groks in seconds (P=23, ~800 steps)."""
    net = "--model.init_args.network.init_args."
    return [
        "-c", str(ROOT / "configs/cpu/grok.yaml"),
        "--data.init_args.modulus=23", "--data.init_args.train_fraction=0.7",
        f"{net}d_model=64", f"{net}n_heads=4", f"{net}d_mlp=256",
        "--model.init_args.optimizer.init_args.lr=3.0e-3",
        "--trainer.max_steps=1000", "--trainer.check_val_every_n_epoch=50",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]


def checkpoint_at(folder, step: int) -> Path:
    """The one checkpoint in ``folder`` written at ``step`` (Lightning names it ``epoch=E-step=N.ckpt``,
    lit_grok's ModelCheckpoint ``step=N.ckpt``; under the step engine E counts batches, not steps)."""
    found = sorted(Path(folder).glob(f"*step={step}.ckpt"))
    assert len(found) == 1, f"no single checkpoint at step {step} in {folder}: {sorted(Path(folder).iterdir())}"
    return found[0]


def default_sigint() -> None:
    """``preexec_fn`` for a process a test interrupts with SIGINT: pytest-xdist's workers ignore SIGINT, and a
    child inherits an ignored signal, so Python in it would never raise KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
