"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis + hypothesis):
no input, valid or not, gives a 5xx, and every answer matches its documented schema."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from prismrec.serve.app import create_app  # noqa: E402
from prismrec.serve.settings import ServeSettings  # noqa: E402
from prismrec.serve.state import StateHolder  # noqa: E402


@pytest.fixture
def fuzz_auth(admin_token):
    """Fuzzed requests carry the admin token, so that POST /items reaches its validation."""
    return {"Authorization": f"Bearer {admin_token}"}


@pytest.fixture
def api_schema(vbpr_state, admin_token):
    app = create_app(holder=StateHolder(ServeSettings(bundle=vbpr_state.bundle, admin_token=admin_token),
                                        vbpr_state))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, fuzz_auth):
    response = case.call(headers=fuzz_auth)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
