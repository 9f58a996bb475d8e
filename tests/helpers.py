"""Test helpers: a catalog builder and a signer. No sockets here."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from ingest.domain import signing


@dataclasses.dataclass
class Demo:
    """A small catalog: two providers, each with one offering and two resources."""

    provider: str
    secret: str
    other_provider: str
    other_secret: str
    offering: str
    resource: str
    resource2: str
    plan_period: str
    closed_plan_period: str
    closed_resource: str
    erred_resource: str
    planless_resource: str
    other_resource: str
    no_secret_provider: str

    def doc(self) -> dict[str, Any]:
        components = [
            {"type": "cpu_hours", "billing_type": "usage", "measured_unit": "hours"},
            {"type": "ram_gb", "billing_type": "usage", "measured_unit": "GB"},
            {"type": "storage_tb", "billing_type": "limit", "measured_unit": "TB"},
            {"type": "licence", "billing_type": "one", "measured_unit": "unit"},
            {"type": "support", "billing_type": "fixed", "measured_unit": "month"},
        ]
        other_offering = str(uuid.uuid5(uuid.NAMESPACE_URL, self.offering + "-other"))
        plan = str(uuid.uuid5(uuid.NAMESPACE_URL, self.offering + "-plan"))

        def resource(
            uid: str,
            state: str = "OK",
            offering: str | None = None,
            plan_: str | None = plan,
            periods: list[dict[str, Any]] | None = None,
        ) -> dict[str, Any]:
            return {
                "uuid": uid,
                "offering": offering or self.offering,
                "state": state,
                "plan": plan_,
                "plan_periods": periods or [],
            }

        return {
            "service_providers": [
                {"customer": self.provider, "name": "HPC Centre", "api_secret_code": self.secret},
                {"customer": self.other_provider, "name": "Other", "api_secret_code": self.other_secret},
                {"customer": self.no_secret_provider, "name": "No secret", "api_secret_code": None},
            ],
            "offerings": [
                {
                    "uuid": self.offering,
                    "customer": self.provider,
                    "name": "Cluster",
                    "components": components,
                },
                {
                    "uuid": other_offering,
                    "customer": self.other_provider,
                    "name": "Other cluster",
                    "components": components,
                },
            ],
            "resources": [
                resource(
                    self.resource,
                    periods=[{"uuid": self.plan_period, "start": "2020-01-01T00:00:00Z", "end": None}],
                ),
                resource(self.resource2),
                resource(
                    self.closed_resource,
                    periods=[
                        {
                            "uuid": self.closed_plan_period,
                            "start": "2020-01-01T00:00:00Z",
                            "end": "2021-01-01T00:00:00Z",
                        }
                    ],
                ),
                resource(self.erred_resource, state="Erred"),
                resource(self.planless_resource, plan_=None),
                resource(self.other_resource, offering=other_offering),
            ],
        }

    def sign(self, claims: dict[str, Any], secret: str | None = None) -> str:
        return signing.sign(claims, secret or self.secret)

    def body(self, claims: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"customer": self.provider, "data": self.sign(claims), **extra}


def make_demo() -> Demo:
    u = lambda: str(uuid.uuid4())  # noqa: E731
    return Demo(
        provider=u(),
        secret="s3cr3t-" + uuid.uuid4().hex[:9],
        other_provider=u(),
        other_secret="0ther-" + uuid.uuid4().hex[:10],
        offering=u(),
        resource=u(),
        resource2=u(),
        plan_period=u(),
        closed_plan_period=u(),
        closed_resource=u(),
        erred_resource=u(),
        planless_resource=u(),
        other_resource=u(),
        no_secret_provider=u(),
    )
