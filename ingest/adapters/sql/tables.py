"""SQLAlchemy 2.x models of the catalog, the usage rows and the accepted-report record.

Schema changes go through Alembic (ingest/migrations); these models are its source of truth,
and of the column lists the batch commit writes (both the PostgreSQL COPY path and the
generic upsert take them from here, so the two cannot drift).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class DecimalText(TypeDecorator[Decimal]):
    """Exact decimals on SQLite, which would otherwise store Numeric as a binary float."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(Decimal(value).quantize(Decimal("0.01")))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


Amount = Numeric(20, 2).with_variant(DecimalText(), "sqlite")
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ServiceProvider(Base):
    __tablename__ = "service_providers"
    customer_uuid: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    api_secret_code: Mapped[str | None] = mapped_column(String(512), nullable=True)
    previous_secret: Mapped[str | None] = mapped_column(String(512), nullable=True)
    previous_secret_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rate_limit: Mapped[float | None] = mapped_column(Float, nullable=True)


class Offering(Base):
    __tablename__ = "offerings"
    uuid: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    customer_uuid: Mapped[UUID] = mapped_column(
        ForeignKey("service_providers.customer_uuid", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255), default="")


class OfferingComponent(Base):
    __tablename__ = "offering_components"
    __table_args__ = (UniqueConstraint("offering_uuid", "type"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    offering_uuid: Mapped[UUID] = mapped_column(ForeignKey("offerings.uuid", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(255))
    billing_type: Mapped[str] = mapped_column(String(16))
    measured_unit: Mapped[str] = mapped_column(String(64), default="")


class Resource(Base):
    __tablename__ = "resources"
    uuid: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    offering_uuid: Mapped[UUID] = mapped_column(ForeignKey("offerings.uuid", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(32))
    plan_uuid: Mapped[UUID | None] = mapped_column(Uuid, nullable=True)


class PlanPeriod(Base):
    __tablename__ = "plan_periods"
    uuid: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    resource_uuid: Mapped[UUID] = mapped_column(ForeignKey("resources.uuid", ondelete="CASCADE"), index=True)
    start: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CatalogMeta(Base):
    """One row; ``version`` is bumped by every catalog change so caches know to reload."""

    __tablename__ = "catalog_meta"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


# The dedupe key of a usage row (domain UsageKey: resource, component, billing period): the
# unique constraint and the upsert's conflict target.
USAGE_KEY = ("resource_uuid", "component_type", "billing_period")


class ComponentUsage(Base):
    """The usage of one component of one resource in one billing period (absolute, last wins).

    ``report_seq`` is the acceptance sequence of the report that set the row: an upsert only
    overwrites a row whose sequence is lower, so an old report can never roll a value back.
    """

    __tablename__ = "component_usages"
    __table_args__ = (UniqueConstraint(*USAGE_KEY),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resource_uuid: Mapped[UUID] = mapped_column(Uuid)
    component_type: Mapped[str] = mapped_column(String(255))
    billing_period: Mapped[dt.date] = mapped_column(Date)
    plan_period_uuid: Mapped[UUID | None] = mapped_column(Uuid, nullable=True)
    amount: Mapped[Decimal] = mapped_column(Amount)
    description: Mapped[str] = mapped_column(Text, default="")
    recurring: Mapped[bool] = mapped_column(Boolean, default=False)
    missing_usage_policy: Mapped[str] = mapped_column(String(16), default="none")
    date: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    report_id: Mapped[str] = mapped_column(String(32))
    report_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


# The unique index on usage_reports.seq; the unit of work recognises its violations.
SEQ_INDEX = "uq_usage_reports_seq_live"


class UsageReport(Base):
    """Every accepted report that reached SQL, with its final state.

    state: queued | committed | superseded | quarantined. A report still in Redis only
    (accepted, not yet committed) has no row here yet.
    """

    __tablename__ = "usage_reports"
    __table_args__ = (
        # only quarantined reports are ever looked up by state (see migration 0005)
        Index(
            "ix_usage_reports_quarantined",
            "seq",
            postgresql_where=text("state = 'quarantined'"),
            sqlite_where=text("state = 'quarantined'"),
        ),
        # one report per acceptance sequence, quarantined records aside: a report quarantined
        # because Redis handed its sequence out again must still be recordable (migration 0006)
        Index(
            SEQ_INDEX,
            "seq",
            unique=True,
            postgresql_where=text("state <> 'quarantined'"),
            sqlite_where=text("state <> 'quarantined'"),
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    customer_uuid: Mapped[UUID] = mapped_column(Uuid)
    resource_uuid: Mapped[UUID | None] = mapped_column(Uuid, nullable=True)
    billing_period: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    accepted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    token: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    committed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# What the batch commit writes, in table order (the order of the COPY fields).
USAGE_COLUMNS: tuple[str, ...] = tuple(c.name for c in ComponentUsage.__table__.columns if not c.primary_key)
# A newer report overwrites every column but the key.
USAGE_UPDATED: tuple[str, ...] = tuple(c for c in USAGE_COLUMNS if c not in USAGE_KEY)
REPORT_COLUMNS: tuple[str, ...] = tuple(c.name for c in UsageReport.__table__.columns)
# A report already recorded keeps its first outcome unless it is still in one of these states
# (quarantined: re-driven by replay); then only its outcome columns change.
REPORT_REPLACEABLE = ("queued", "quarantined")
REPORT_UPDATED = ("state", "reason_code", "reason", "deliveries", "committed_at")


class JournalStateRow(Base):
    """One row (id 1): the Redis journal epoch SQL trusts and what it last saw of it
    (services/journal_epoch.py; migration 0007). Times are Unix seconds."""

    __tablename__ = "journal_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[str | None] = mapped_column(String(64), nullable=True)
    floor_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    committed_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    committed_accepted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    verified_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    verified_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    safe_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    checked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    adopted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    losses: Mapped[int] = mapped_column(Integer, default=0)
    last_loss_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_loss: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON


# The Waldur bridge (migration 0008). Written only while WALDUR_URL is set.


class UsageOutbox(Base):
    """One row per (resource, billing period) whose committed usage Waldur must see.

    The commit that applies a usage row raises ``dirty_seq`` (the highest report sequence
    committed for the key) and sets ``dirty_since`` in the same transaction, so no commit can
    be forgotten. The forwarder sends every component's latest amount in one call, then
    records the sequence Waldur acknowledged; the key is clean again only if nothing newer
    was committed meanwhile (``dirty_seq <= acked_seq``)."""

    __tablename__ = "usage_outbox"
    __table_args__ = (
        Index(
            "ix_usage_outbox_dirty",
            "dirty_since",
            postgresql_where=text("dirty_since IS NOT NULL"),
            sqlite_where=text("dirty_since IS NOT NULL"),
        ),
    )
    resource_uuid: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    billing_period: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    dirty_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    dirty_since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    pending_reports: Mapped[int] = mapped_column(Integer, default=0)
    acked_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    acked_values: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON {type: "1.00"}
    acked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failed: Mapped[bool] = mapped_column(Boolean, default=False)  # in the forward quarantine


class ForwardFailure(Base):
    """A forward Waldur refused for good (4xx, or a 5xx that kept repeating): the forward
    quarantine, with Waldur's status and body; ``ingest waldur failures retry`` re-dirties
    the key and sets ``resolved_at``."""

    __tablename__ = "forward_failures"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resource_uuid: Mapped[UUID] = mapped_column(Uuid, index=True)
    billing_period: Mapped[dt.date] = mapped_column(Date)
    seq: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    request: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON of the call
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WaldurSyncState(Base):
    """One row (id 1): what the last catalog sync from Waldur did, for the next incremental
    sync (``watermark``: when the last successful one started) and ``ingest waldur status``."""

    __tablename__ = "waldur_sync_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    watermark: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_sync_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_full_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_summary: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    server_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
