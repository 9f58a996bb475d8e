"""The WaldurCatalog port over the official client: GETs only, never a secret rotation.

Every list asks only for the fields the sync maps (``field=``): the full representations are
heavy, hold secret options, and on 7.0.7 a ``limit_usage: null`` makes the 8.x client's
``Resource.from_dict`` fail for the whole page. Transient failures (5xx, 429, transport) are
retried a few times with back-off (``Retry-After`` when given) before they surface.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse
from uuid import UUID

from waldur_api_client import AuthenticatedClient
from waldur_api_client.api.marketplace_provider_offerings import marketplace_provider_offerings_list
from waldur_api_client.api.marketplace_provider_resources import (
    marketplace_provider_resources_list,
    marketplace_provider_resources_plan_periods_list,
    marketplace_provider_resources_retrieve,
)
from waldur_api_client.api.marketplace_service_providers import (
    marketplace_service_providers_list,
    service_provider_api_secret_code_retrieve,
)
from waldur_api_client.api.users import users_me_retrieve
from waldur_api_client.api.version import version_retrieve
from waldur_api_client.models import (
    ProviderOfferingDetailsFieldEnum,
    ResourceFieldEnum,
    ResourceOEnum,
    ServiceProviderFieldEnum,
    UserMeFieldEnum,
)
from waldur_api_client.types import UNSET, Unset
from waldur_api_client.utils import parse_link_header

from ingest.adapters.waldur.client import FORBIDDEN, UNAUTHORIZED, WaldurFailure, failure
from ingest.services.sync_ports import (
    Progress,
    RemoteComponent,
    RemoteOffering,
    RemotePlanPeriod,
    RemoteProvider,
    RemoteResource,
    SecretRead,
    ServerInfo,
    WaldurError,
)

T = TypeVar("T")

PAGE_SIZE = 100  # what the client's sync_all sends: the largest page every Waldur serves
PROVIDER_FIELDS = [
    ServiceProviderFieldEnum.UUID,
    ServiceProviderFieldEnum.CUSTOMER_UUID,
    ServiceProviderFieldEnum.CUSTOMER_NAME,
]
OFFERING_FIELDS = [
    ProviderOfferingDetailsFieldEnum.UUID,
    ProviderOfferingDetailsFieldEnum.NAME,
    ProviderOfferingDetailsFieldEnum.CUSTOMER_UUID,
    ProviderOfferingDetailsFieldEnum.STATE,
    ProviderOfferingDetailsFieldEnum.TYPE,
    ProviderOfferingDetailsFieldEnum.COMPONENTS,
]
RESOURCE_FIELDS = [
    ResourceFieldEnum.UUID,
    ResourceFieldEnum.NAME,
    ResourceFieldEnum.STATE,
    ResourceFieldEnum.OFFERING_UUID,
    ResourceFieldEnum.PLAN_UUID,
    ResourceFieldEnum.MODIFIED,
]


def _value(v: Any, default: Any = None) -> Any:
    return default if isinstance(v, Unset) or v is None else v


def _text(v: Any, limit: int) -> str:
    """A name as the catalog's columns take it (their length, enum labels as their value)."""
    v = _value(v, "")
    return str(getattr(v, "value", v))[:limit]


def _moment(v: Any) -> dt.datetime | None:
    if not isinstance(v, dt.datetime):
        return None
    return v if v.tzinfo else v.replace(tzinfo=dt.UTC)


def _error(f: WaldurFailure) -> WaldurError:
    return WaldurError(f.kind, f.status, f.body, f.transient)


class WaldurCatalogReader:
    """The catalog as one Waldur serves it to one token."""

    def __init__(
        self,
        client: AuthenticatedClient,
        workers: int = 8,
        attempts: int = 4,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.client.get_httpx_client()  # built now, not by the first of several threads
        self.workers = workers
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for attempt in range(self.attempts):
            try:
                return fn(*args, client=self.client, **kwargs)
            except Exception as exc:
                found = failure(exc)
                if found is None:
                    raise
                if not found.transient or attempt == self.attempts - 1:
                    raise _error(found) from None
                delay = found.retry_after if found.retry_after is not None else self.backoff * 2**attempt
                self.sleep(min(delay, 30.0))
        raise AssertionError("unreachable")

    def server(self) -> ServerInfo:
        me = self._call(users_me_retrieve.sync, field=[UserMeFieldEnum.IS_STAFF, UserMeFieldEnum.USERNAME])
        try:
            version: str | None = self._call(version_retrieve.sync).version
        except WaldurError as error:
            if error.kind == UNAUTHORIZED:
                raise
            version = None  # an older server without the endpoint: tell the line by behaviour
        return ServerInfo(version, _value(me.is_staff), _value(me.username))

    def providers(self, since: dt.datetime | None) -> list[RemoteProvider]:
        rows = self._call(
            marketplace_service_providers_list.sync_all,
            field=PROVIDER_FIELDS,
            modified=UNSET if since is None else since,
        )
        found = []
        for row in rows:
            customer = _value(row.customer_uuid)
            if customer is None:
                continue
            found.append(RemoteProvider(customer, _value(row.uuid), _text(row.customer_name, 255)))
        return found

    def secrets(self, providers: Sequence[RemoteProvider]) -> dict[UUID, SecretRead]:
        def read(p: RemoteProvider) -> SecretRead:
            if p.service_provider is None:
                return SecretRead(None, "Waldur gave no service-provider uuid")
            try:
                # GET only: service_provider_api_secret_code_generate would rotate it
                answer = self._call(service_provider_api_secret_code_retrieve.sync, p.service_provider)
            except WaldurError as error:
                if error.kind == FORBIDDEN:
                    return SecretRead(None, f"403: the token may not read it ({error.detail[:120]})")
                if error.status == 404:
                    return SecretRead(None, "404: Waldur no longer has this service provider")
                raise
            return SecretRead(answer.api_secret_code or None)

        return self._parallel(providers, read, lambda p: p.customer, None)

    def offerings(self, scope: Sequence[UUID], since: dt.datetime | None) -> list[RemoteOffering]:
        rows = self._call(
            marketplace_provider_offerings_list.sync_all,
            field=OFFERING_FIELDS,
            uuid_list=",".join(u.hex for u in scope) if scope else UNSET,
            modified=UNSET if since is None else since,
        )
        found = []
        for row in rows:
            uuid, customer = _value(row.uuid), _value(row.customer_uuid)
            if uuid is None or customer is None:
                continue
            components = tuple(
                RemoteComponent(
                    _text(c.type_, 255),
                    _text(c.billing_type, 16) or "usage",
                    _text(c.measured_unit, 64),
                )
                for c in _value(row.components, [])
                if _value(c.type_)
            )
            found.append(RemoteOffering(uuid, customer, _text(row.name, 255), components))
        return found

    def resources(
        self, offerings: Sequence[UUID], since: dt.datetime | dt.date | None, progress: Progress
    ) -> list[RemoteResource]:
        # a page walk of our own (sync_detailed) rather than sync_all, for the progress bar;
        # it follows rel="next" exactly as sync_all does. ``o=created`` keeps pages stable.
        found: list[RemoteResource] = []
        page = 1
        while True:
            answer = self._call(
                marketplace_provider_resources_list.sync_detailed,
                field=RESOURCE_FIELDS,
                o=[ResourceOEnum.CREATED],
                offering_uuid=list(offerings) if offerings else UNSET,
                # the client sends since.isoformat(): a date gives 7.x's day filter
                modified=UNSET if since is None else since,
                page=UNSET if page == 1 else page,  # as sync_all: the first request names none
                page_size=PAGE_SIZE,
            )
            if page == 1:
                count = answer.headers.get("X-Result-Count")
                progress.phase("resources", int(count) if count and count.isdigit() else None)
            rows = answer.parsed or []
            progress.advance(len(rows))
            found.extend(r for r in (self._resource(row) for row in rows) if r is not None)
            link = parse_link_header(answer.headers.get("Link", "")).get("next")
            pages = parse_qs(urlparse(link).query).get("page") if link else None
            if not pages:
                return found
            page = int(pages[0])

    @staticmethod
    def _resource(row: Any) -> RemoteResource | None:
        uuid, offering = _value(row.uuid), _value(row.offering_uuid)
        if uuid is None or offering is None:
            return None
        return RemoteResource(
            uuid, offering, _text(row.name, 255), _text(row.state, 32), _value(row.plan_uuid)
        )

    def resources_by_uuid(self, uuids: Sequence[UUID]) -> dict[UUID, RemoteResource]:
        def read(u: UUID) -> RemoteResource | None:
            try:
                return self._resource(
                    self._call(marketplace_provider_resources_retrieve.sync, u, field=RESOURCE_FIELDS)
                )
            except WaldurError as error:
                if error.status == 404:
                    return None
                raise

        found = self._parallel(uuids, read, lambda u: u, None)
        return {u: r for u, r in found.items() if r is not None}

    def plan_periods(
        self, resources: Sequence[UUID], progress: Progress
    ) -> dict[UUID, list[RemotePlanPeriod] | None]:
        def read(u: UUID) -> list[RemotePlanPeriod] | None:
            try:
                rows = self._call(marketplace_provider_resources_plan_periods_list.sync, u)
            except WaldurError as error:
                if error.status == 404:
                    return None
                raise
            return [RemotePlanPeriod(p.uuid, u, _moment(p.start), _moment(p.end)) for p in rows]

        progress.phase("plan periods", len(resources))
        return self._parallel(resources, read, lambda u: u, progress)

    def _parallel(
        self,
        items: Sequence[Any],
        read: Callable[[Any], T],
        key: Callable[[Any], UUID],
        progress: Progress | None,
    ) -> dict[UUID, T]:
        """``read`` each item on a few threads; the first failure cancels the rest."""
        found: dict[UUID, T] = {}
        if not items:
            return found
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            futures: dict[Future[T], Any] = {pool.submit(read, item): item for item in items}
            try:
                for done in as_completed(futures):
                    found[key(futures[done])] = done.result()
                    if progress is not None:
                        progress.advance()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return found
