"""The usage sink (services.forward_ports.UsageSink): set_usage and the version read through
the official client, every failure read by ``client.failure`` into the port's SinkFailure."""

from __future__ import annotations

from waldur_api_client import AuthenticatedClient
from waldur_api_client.api.marketplace_component_usages import marketplace_component_usages_set_usage
from waldur_api_client.api.version import version_retrieve
from waldur_api_client.models import ComponentUsageCreateRequest, ComponentUsageItemRequest

from ingest.adapters.waldur.client import failure
from ingest.services.forward_ports import SinkFailure, UsageCall


def _failed(exc: BaseException) -> SinkFailure | None:
    found = failure(exc)
    if found is None:
        return None
    return SinkFailure(found.kind, found.status, found.body, found.retry_after)


class WaldurSink:
    def __init__(self, client: AuthenticatedClient) -> None:
        self.client = client
        client.get_httpx_client()  # built once, before forward threads share it

    def set_usage(self, call: UsageCall) -> None:
        body = ComponentUsageCreateRequest(
            usages=[ComponentUsageItemRequest(type_=c, amount=a) for c, a in call.usages],
            date=call.date,
        )
        if call.plan_period is not None:
            body.plan_period = call.plan_period
        else:
            body.resource = call.resource
        try:
            marketplace_component_usages_set_usage.sync_detailed(client=self.client, body=body)
        except Exception as exc:
            found = _failed(exc)
            if found is None:
                raise
            raise found from exc

    def server_version(self) -> str:
        try:
            return str(version_retrieve.sync(client=self.client).version)
        except Exception as exc:
            found = _failed(exc)
            if found is None:
                raise
            raise found from exc
