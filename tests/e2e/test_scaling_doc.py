"""docs/scaling.md: its Python block runs against a real fleet, and its JSON and Envoy configs are the real ones."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from benchmarks.fleet import fleet
from engine_runtime.client.routing import FLEET_SERVICE_CONFIG
from tests.processes import ROOT
from tests.test_doc_blocks import run_blocks

PAGE = (ROOT / "docs" / "scaling.md").read_text()
DOC_TARGET = "ipv4:10.0.0.1:50051,10.0.0.2:50051,10.0.0.3:50051"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE, flags=re.S)


@pytest.mark.asyncio
async def test_the_python_block_runs_against_three_replicas() -> None:
    with fleet(3) as f:
        [block] = blocks("python")
        namespace: dict[str, Any] = {}
        printed = io.StringIO()
        with redirect_stdout(printed):
            await run_blocks([block.replace(DOC_TARGET, f.target)], namespace)
    served_by, finish = printed.getvalue().split()
    assert served_by in f.addresses
    assert finish == "STOPPED"


def test_the_json_block_is_the_clients_service_config() -> None:
    [config] = blocks("json")
    assert json.loads(config) == json.loads(FLEET_SERVICE_CONFIG)


def test_the_envoy_block_has_the_same_policy_and_periods() -> None:
    [envoy] = blocks("yaml")
    [policy] = yaml.safe_load(envoy)["load_balancing_policy"]["policies"]
    typed = policy["typed_extension_config"]["typed_config"]
    assert typed["@type"].endswith("client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin")
    ours = json.loads(FLEET_SERVICE_CONFIG)["loadBalancingConfig"][0]["weighted_round_robin"]
    assert typed["enable_oob_load_report"] is ours["enableOobLoadReport"] is True
    for envoy_name, grpc_name in [
        ("oob_reporting_period", "oobReportingPeriod"),
        ("weight_update_period", "weightUpdatePeriod"),
        ("blackout_period", "blackoutPeriod"),
        ("weight_expiration_period", "weightExpirationPeriod"),
    ]:
        assert typed[envoy_name] == ours[grpc_name]
