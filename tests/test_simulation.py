from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lit_grok.cli import main
from lit_grok.simulation import CircuitSimulation, SimulationData

ROOT = Path(__file__).resolve().parents[1]


def run(tmp_path, config: str, *extra: str) -> dict[str, dict[int, float]]:
    """Runs a simulation config through the CLI and reads its TensorBoard scalars back."""
    from tests.test_training import events

    cli = main(["fit", "-c", str(ROOT / "configs/simulation" / config), f"--trainer.logger.init_args.save_dir={tmp_path}",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *extra])
    ea = events(cli.trainer.log_dir)
    return {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}


def first(curve: dict[int, float], condition) -> int | None:
    return next((step for step, value in sorted(curve.items()) if condition(value)), None)


def test_first_step_matches_hand_computation():
    sim = CircuitSimulation(steps_per_batch=1)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(sim, SimulationData())
    # At w = 0 the CE slope is -(q-1)/q for both circuits and the penalty's slope is 0, so after one GD step
    # w_G1 = lr * w_G2(0) * 112/113, w_M1 = lr * w_M2(0) * 112/113 and the second factors stay put.
    slope = 112 / 113
    assert sim.gen.detach().tolist() == pytest.approx([0.01 * 0.005 * slope, 0.005], rel=1e-12)
    assert sim.mem.detach().tolist() == pytest.approx([0.01 * 1.0 * slope, 1.0], rel=1e-12)
    w_gen, w_mem = (w.detach() for w in sim.weights())
    assert float(w_gen) == pytest.approx(2.478e-7, rel=1e-3) and float(w_mem) == pytest.approx(9.912e-3, rel=1e-3)
    assert float(w_mem / w_gen) == pytest.approx(40_000)  # (1 / 0.005)^2


def test_initial_loss_is_log_q():
    sim = CircuitSimulation()
    assert float(sim.train_loss(*sim.weights()).detach()) == pytest.approx(torch.log(torch.tensor(113.0)).item())


def test_steady_state_matches_the_allocation_theorem():
    # Theorem D.4 with q = 2: w_G / w_M -> (P_M / P_G)^(q kappa / (q - kappa)) = 2^3 = 8. The steady state does
    # not depend on the learning rate, so a larger one gets there in fewer steps (lr 0.05 needs 30,000 for the
    # same 12 digits that lr 0.3 reaches in 6000).
    sim = CircuitSimulation(optimizer=partial(torch.optim.SGD, lr=0.3), steps_per_batch=1000)
    trainer = pl.Trainer(max_steps=6000, max_epochs=-1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(sim, SimulationData())
    w_gen, w_mem = (w.detach() for w in sim.weights())
    assert float(w_gen / w_mem) == pytest.approx(2 ** (2 * 1.2 / (2 - 1.2)), rel=1e-10)


def test_grok_config_memorises_then_groks(tmp_path):
    # the shipped config's 20,000 steps cut to 14,000: it has generalised (test loss < 0.1) by step 13,200
    curves = run(tmp_path, "grok.yaml", "--trainer.max_steps=14000")
    memorised = first(curves["sim/train_loss"], lambda v: v < 0.1)
    grokked = first(curves["sim/test_acc"], lambda v: v == 1.0)
    assert memorised is not None and memorised <= 1000
    assert curves["sim/test_acc"][memorised] == 0.0  # memorised, not generalised
    assert grokked is not None and grokked >= 5 * memorised  # the delay
    assert curves["sim/test_loss"][14_000] < 0.1 and curves["sim/w_gen"][14_000] > curves["sim/w_mem"][14_000]


def test_inefficient_gen_never_generalises(tmp_path):
    curves = run(tmp_path, "inefficient_gen.yaml", "--trainer.max_steps=5000")  # of 20,000: flat from step 2000 on
    assert first(curves["sim/train_loss"], lambda v: v < 0.1) <= 1000
    test_loss = curves["sim/test_loss"]
    assert max(curves["sim/test_acc"].values()) == 0.0 and test_loss[5000] > 5 and test_loss[5000] >= test_loss[2000] - 0.01


def test_equal_speed_generalises_without_delay(tmp_path):
    curves = run(tmp_path, "equal_speed.yaml", "--trainer.max_steps=5000")  # of 20,000: what it shows happens by 5000
    assert first(curves["sim/test_acc"], lambda v: v == 1.0) == 100  # the first logged step
    assert first(curves["sim/test_loss"], lambda v: v < 0.1) <= 5000


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="n_classes must be >= 3"):
        SimulationData(2)
    with pytest.raises(ValueError, match="steps_per_batch must be >= 1"):
        CircuitSimulation(steps_per_batch=0)
