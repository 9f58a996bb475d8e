"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 02:58:39.779055
"""
import sqlalchemy as sa
from alembic import op

import ingest.adapters.sql.tables

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('catalog_meta',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_meta'))
    )
    op.create_table('component_usages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_uuid', sa.Uuid(), nullable=False),
    sa.Column('component_type', sa.String(length=255), nullable=False),
    sa.Column('billing_period', sa.Date(), nullable=False),
    sa.Column('plan_period_uuid', sa.Uuid(), nullable=True),
    sa.Column('amount', sa.Numeric(precision=20, scale=2).with_variant(ingest.adapters.sql.tables.DecimalText(length=32), 'sqlite'), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('recurring', sa.Boolean(), nullable=False),
    sa.Column('missing_usage_policy', sa.String(length=16), nullable=False),
    sa.Column('date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('report_id', sa.String(length=32), nullable=False),
    sa.Column('report_seq', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_component_usages')),
    sa.UniqueConstraint('resource_uuid', 'component_type', 'billing_period', name=op.f('uq_component_usages_resource_uuid'))
    )
    op.create_table('service_providers',
    sa.Column('customer_uuid', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('api_secret_code', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('customer_uuid', name=op.f('pk_service_providers'))
    )
    op.create_table('usage_reports',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('customer_uuid', sa.Uuid(), nullable=False),
    sa.Column('resource_uuid', sa.Uuid(), nullable=True),
    sa.Column('billing_period', sa.Date(), nullable=True),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('token', sa.Text(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason_code', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.Column('committed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_reports')),
    sa.UniqueConstraint('seq', name=op.f('uq_usage_reports_seq'))
    )
    with op.batch_alter_table('usage_reports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usage_reports_customer_uuid'), ['customer_uuid'], unique=False)
        batch_op.create_index('ix_usage_reports_resource', ['resource_uuid'], unique=False)
        batch_op.create_index('ix_usage_reports_state_accepted', ['state', 'accepted_at'], unique=False)

    op.create_table('offerings',
    sa.Column('uuid', sa.Uuid(), nullable=False),
    sa.Column('customer_uuid', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['customer_uuid'], ['service_providers.customer_uuid'], name=op.f('fk_offerings_customer_uuid_service_providers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('uuid', name=op.f('pk_offerings'))
    )
    with op.batch_alter_table('offerings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_offerings_customer_uuid'), ['customer_uuid'], unique=False)

    op.create_table('offering_components',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('offering_uuid', sa.Uuid(), nullable=False),
    sa.Column('type', sa.String(length=255), nullable=False),
    sa.Column('billing_type', sa.String(length=16), nullable=False),
    sa.Column('measured_unit', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['offering_uuid'], ['offerings.uuid'], name=op.f('fk_offering_components_offering_uuid_offerings'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offering_components')),
    sa.UniqueConstraint('offering_uuid', 'type', name=op.f('uq_offering_components_offering_uuid'))
    )
    op.create_table('resources',
    sa.Column('uuid', sa.Uuid(), nullable=False),
    sa.Column('offering_uuid', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('plan_uuid', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['offering_uuid'], ['offerings.uuid'], name=op.f('fk_resources_offering_uuid_offerings'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('uuid', name=op.f('pk_resources'))
    )
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_resources_offering_uuid'), ['offering_uuid'], unique=False)

    op.create_table('plan_periods',
    sa.Column('uuid', sa.Uuid(), nullable=False),
    sa.Column('resource_uuid', sa.Uuid(), nullable=False),
    sa.Column('start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['resource_uuid'], ['resources.uuid'], name=op.f('fk_plan_periods_resource_uuid_resources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('uuid', name=op.f('pk_plan_periods'))
    )
    with op.batch_alter_table('plan_periods', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plan_periods_resource_uuid'), ['resource_uuid'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('plan_periods', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plan_periods_resource_uuid'))

    op.drop_table('plan_periods')
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_resources_offering_uuid'))

    op.drop_table('resources')
    op.drop_table('offering_components')
    with op.batch_alter_table('offerings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offerings_customer_uuid'))

    op.drop_table('offerings')
    with op.batch_alter_table('usage_reports', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_reports_state_accepted')
        batch_op.drop_index('ix_usage_reports_resource')
        batch_op.drop_index(batch_op.f('ix_usage_reports_customer_uuid'))

    op.drop_table('usage_reports')
    op.drop_table('service_providers')
    op.drop_table('component_usages')
    op.drop_table('catalog_meta')

