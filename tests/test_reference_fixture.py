"""The model reproduces what the reference HRM computed for given weights.

Any fixture in the same format can be checked:
``HRM_REFERENCE_FIXTURE=<path> pytest -k reference_fixture``. With ``HRM_REFERENCE_DIR`` set
to a checkout of the reference code, a fresh fixture is also made from it by
``tests/fixtures/make_reference_fixture.py`` and checked (see ``tests/fixtures/README.md``).
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hrm_core import load_reference_checkpoint
from hrm_core.config.schema import ArchConfig
from hrm_core.model.hrm import ModelDims, build_model, count_parameters
from hrm_core.model.reference import COMPILE_PREFIX
from hrm_core.train.losses import metrics_dict
from tests.conftest import FIXTURE

ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def fixture():
    assert os.path.exists(FIXTURE), f"reference fixture not found: {FIXTURE} (set HRM_REFERENCE_FIXTURE)"
    return torch.load(FIXTURE, weights_only=True)


def _run_segments(model, fixture):
    model.eval()
    batch = fixture["batch"]
    carry = model.initial_carry(batch)
    results = []
    # The reference ran SDPA's math; CPU flash attention sums in another order (~1e-5 off).
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        for _ in fixture["segments"]:
            carry, loss, sums, outputs, _ = model(carry, batch)
            results.append((carry, loss, metrics_dict(sums), outputs))
    return results


def test_reference_fixture_every_segment(fixture):
    _check_every_segment(fixture)


def _check_every_segment(fixture):
    model = load_reference_checkpoint(fixture["state_dict"], fixture["config"])
    assert count_parameters(model) == fixture["params"]
    results = _run_segments(model, fixture)
    assert len(results) == len(fixture["segments"]) == fixture["config"]["halt_max_steps"]
    for i, (seg, (carry, loss, metrics, outputs)) in enumerate(
            zip(fixture["segments"], results, strict=True)):
        for key in ("logits", "q_halt_logits", "q_continue_logits"):
            torch.testing.assert_close(outputs[key], seg[key], atol=ATOL, rtol=RTOL,
                                       msg=lambda m, k=key, i=i: f"segment {i} {k}: {m}")
        expected_loss = seg["loss"].item()
        assert abs(loss.item() - expected_loss) <= ATOL * max(1.0, abs(expected_loss)), f"segment {i} loss"
        for name, expected in seg["metrics"].items():
            assert metrics[name] == pytest.approx(expected.item(), rel=RTOL, abs=ATOL), (
                f"segment {i} metric {name}")
        assert torch.equal(carry.steps, seg["steps"]), f"segment {i} steps"
        assert torch.equal(carry.halted, seg["halted"]), f"segment {i} halted"


def test_reference_fixture_compiled_prefix_accepted(fixture):
    prefixed = {k.replace("model.", f"{COMPILE_PREFIX}model.", 1): v
                for k, v in fixture["state_dict"].items()}
    model = load_reference_checkpoint(prefixed, fixture["config"])
    ref = load_reference_checkpoint(fixture["state_dict"], fixture["config"])
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), ref.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_reference_fixture_from_file(fixture, tmp_path):
    path = tmp_path / "step_100"
    torch.save(fixture["state_dict"], path)  # the reference saves a bare state dict
    model = load_reference_checkpoint(str(path), fixture["config"])
    logits = _run_segments(model, fixture)[-1][3]["logits"]
    torch.testing.assert_close(logits, fixture["segments"][-1]["logits"], atol=ATOL, rtol=RTOL)


def test_reference_fixture_mismatched_config_is_an_error(fixture):
    from hrm_core.errors import UserError

    config = fixture["config"]
    wrong = dict(config, hidden_size=config["hidden_size"] * 2, num_heads=config["num_heads"])
    with pytest.raises(UserError):
        load_reference_checkpoint(fixture["state_dict"], wrong)


def test_hrm_v1_parameter_count():
    with torch.device("meta"):
        model = build_model(ArchConfig(), ModelDims(vocab_size=11, seq_len=81, num_puzzle_identifiers=1))
    assert count_parameters(model) == 27_275_266
    # the puzzle embedding is a buffer trained by sign-SGD, not a parameter
    assert "model.inner.puzzle_emb.weights" in dict(model.named_buffers())


@pytest.mark.skipif(not os.environ.get("HRM_REFERENCE_DIR"),
                    reason="HRM_REFERENCE_DIR (a checkout of the reference code) is not set")
def test_a_fixture_made_from_the_reference_checkout_reproduces(tmp_path):
    from tests.fixtures.make_reference_fixture import main

    path = tmp_path / "fresh.pt"
    main(["--reference-dir", os.environ["HRM_REFERENCE_DIR"], "--output", str(path), "--seed", "1"])
    _check_every_segment(torch.load(path, weights_only=True))
