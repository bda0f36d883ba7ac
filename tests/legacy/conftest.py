"""The legacy service's own tests (data_sync); the HTTP contract lives in tests/api."""

from tests.api.conftest import BODY_LIMIT, start_legacy

__all__ = ["BODY_LIMIT", "start_legacy"]
