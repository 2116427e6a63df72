"""Conformance: the ref engine against the official `rwkv` 0.8.32 fixtures in `conformance/fixtures/`.

Every fixture model is written as fp32/fp16/bf16 `.pth` and fp16 `.st`; each check must stay within the
ref tolerance (max relative L2 error of the logits 1e-5). Runs without torch.
"""
from __future__ import annotations

import pytest

from conformance import runner

pytestmark = pytest.mark.conformance

FIXTURES = runner.fixture_paths()


def test_fixtures_present():
    assert len(FIXTURES) >= 6, "conformance/fixtures/ is empty; run `.venv-oracle/bin/python -m conformance.generate`"


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_ref_matches_official(path):
    fixture = runner.load_fixture(path)
    rows = runner.check_fixture(fixture, backend="ref", dtype="float32")
    failed = [r for r in rows if not r.passed]
    assert not failed, "\n" + runner.format_table(failed)
    skipped = [r for r in rows if r.skipped]
    if skipped:
        pytest.skip("\n" + runner.format_table(skipped))


def test_corrupted_digest_gives_regenerate_hint(tmp_path):
    import json

    import numpy as np

    with np.load(FIXTURES[0]) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "digest": "0" * 64}))
    np.savez(tmp_path / FIXTURES[0].name, **arrays)
    with pytest.raises(runner.FixtureError, match=r"HINT: regenerate with `\.venv-oracle/bin/python -m conformance\.generate"):
        runner.load_fixture(tmp_path / FIXTURES[0].name)


def test_metrics():
    import numpy as np

    ref = np.array([[3.0, 4.0], [1.0, 0.0]])
    assert runner.rel_l2(ref, ref) == 0
    assert runner.rel_l2(ref + [[0.0, 0.5], [0.0, 0.0]], ref) == pytest.approx(0.1)
    assert runner.rel_l2(ref[:1], ref) == float("inf")  # a shape mismatch never passes
