"""Audit of ../shared/wild (real published images; evaluation only, never trained on)."""

import pytest
from conftest import SHARED_WILD

from dfxlib.data.audit import audit
from dfxlib.data.index import build_index

pytestmark = pytest.mark.skipif(not SHARED_WILD.is_dir(),
                                reason=f"{SHARED_WILD} is absent (it ships beside the checkout in CI)")


def test_wild_audit_reports_format_confound():
    idx = build_index(SHARED_WILD, progress=False)
    assert idx.layout == "paper"
    assert len(idx.usable) > 100
    result = audit(idx)
    c = result.confounds.set_index(["attribute", "task"])
    assert c.loc[("format", "real vs fake"), "confounded"]
    assert any("format is confounded" in w for w in result.warnings)
