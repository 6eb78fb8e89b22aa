from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from nextdeploy.core.ids import is_release_id, is_valid_deployment_id, new_release_id

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2999, 1, 1), timezones=st.just(UTC))


@given(moments)
def test_ids_are_valid_deployment_ids(moment: datetime) -> None:
    release_id = new_release_id(moment)
    assert is_release_id(release_id)
    assert is_valid_deployment_id(release_id)
    assert len(release_id) <= 32 and not release_id.startswith("dpl_")


@given(moments, st.integers(min_value=1, max_value=10**9))
def test_ids_sort_by_time(moment: datetime, step_ms: int) -> None:
    later = moment + timedelta(milliseconds=step_ms)
    assert new_release_id(moment, "ffff") < new_release_id(later, "0000")


def test_ids_are_unique() -> None:
    moment = datetime(2026, 11, 21, tzinfo=UTC)
    assert len({new_release_id(moment) for _ in range(200)}) > 150  # 65536 suffixes per millisecond


def test_deployment_id_rules() -> None:
    assert not is_valid_deployment_id("dpl_abc")
    assert not is_valid_deployment_id("a" * 33)
    assert not is_valid_deployment_id("1.2.3")
    assert is_valid_deployment_id("20261121-064512-123-a1b2")
