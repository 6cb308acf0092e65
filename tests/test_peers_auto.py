"""``benchmarks/peers.py --auto``: schedule="auto" columns tuned on a separate pilot, pilot NFE reported apart."""

from __future__ import annotations

import pytest
import torch

from benchmarks import peers
from benchmarks._peers import ours
from benchmarks._peers.common import Oracle, make_problem


def test_callable_schedule_runs_at_its_budget_with_the_pilot_apart():
    p = make_problem(2, "vp", 64, split="heldout", index=0, floor_repeats=1)
    cfg = ours.auto_configs(["unipc"])[0]
    spec = next(s for s in ours.config_specs(p, [6], [cfg]))
    rec = peers.execute(spec, p, p.x_T(0), [6], sw2=False)
    assert rec["error"] is None, rec["error"]  # a tuned grid is a tensor: no nfe= beside it
    assert rec["nfe"] == 6 and rec["bucket"] == 6  # the counted run spends the budget, not the pilot
    assert rec["pilot_nfe"] > 6 and rec["finite"]  # score calls of the pilot (reference + grid search)


def test_pilot_is_not_the_evaluated_draw():
    p = make_problem(2, "vp", 64, split="heldout", index=0, floor_repeats=1)
    pilot = p.sde.prior_sample((ours.AUTO_PILOT_BATCH, p.dim),
                               generator=torch.Generator().manual_seed(ours.AUTO_PILOT_SEED), dtype=torch.float32)
    for k in range(3):  # the seeds peers.py evaluates
        x_T = p.x_T(p.seed + 1000 * k)
        assert not any(bool((row == pilot).all(1).any()) for row in x_T)


def test_grid_is_tuned_once_per_problem_and_budget():
    p = make_problem(2, "vp", 32, split="heldout", index=0, floor_repeats=1)
    fn = ours.auto_schedule()
    solver = ours.sdekit.solvers.resolve("dpmpp_3m")
    g1, n1 = fn(p, 5, solver)
    oracle = Oracle(p)
    g2, n2 = fn(p, 5, solver)
    assert torch.equal(g1, g2) and n1 == n2 > 0 and oracle.nfe == 0
    assert len(g1) == 5  # steps_for_nfe(dpmpp_3m, 5, denoise=True) = 4 steps


@pytest.mark.parametrize("name", ["sde_adaptive", "ode_adaptive", "nope"])
def test_auto_refuses_what_cannot_be_tuned(name):
    with pytest.raises(ValueError, match="auto"):
        ours.auto_configs([name])


def test_auto_takes_fixed_step_sde_solvers():
    """Stochastic fixed-step solvers are tunable (``grids.tune`` on fixed Brownian paths), not shiftable."""
    (c,) = ours.auto_configs(["dpmpp_2m_sde"])
    assert c.solver == "dpmpp_2m_sde" and callable(c.schedule)
    with pytest.raises(ValueError, match="SHIFTABLE"):
        ours.auto_configs(["dpmpp_2m_sde"], shift=True)


def test_main_auto_adds_columns_without_leaking(tmp_path):
    before = list(ours.EXTRA_CONFIGS)
    result = peers.main(["--split", "heldout", "--problems", "2d-vp", "--samples", "64", "--nfe", "5,6",
                         "--seeds", "1", "--tolerances", "", "--no-overhead", "--sdekit", "defaults",
                         "--solvers", "unipc", "--libraries", "sdekit", "--auto", "unipc", "--auto-nfe", "5",
                         "--no-sw2", "--out", str(tmp_path), "--tag", "t"])
    auto = [r for r in result["runs"] if r["setting"].startswith("auto")]
    assert [r["budget"] for r in auto] == [5] and auto[0]["nfe"] == 5 and auto[0]["pilot_nfe"] > 0
    assert not any("pilot_nfe" in r for r in result["runs"] if not r["setting"].startswith("auto"))
    assert ours.EXTRA_CONFIGS == before
    md = (tmp_path / "peers-t.md").read_text()
    assert 'schedule="auto"' in md and f"pilot {auto[0]['pilot_nfe']}" in md
