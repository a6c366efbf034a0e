"""The Temporal client every process shares, and the registration of Cronpilot's search
attributes (their names live in ``schema.temporal_ids``)."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from schema.settings import Settings
from schema.temporal_ids import TASK_ID_ATTRIBUTE, USER_ID_ATTRIBUTE


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """A client with the pydantic data converter; a lazy one connects on its first call."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
    )


async def ensure_search_attributes(client: Client) -> None:
    """Register CronpilotTaskId and CronpilotUserId; a no-op when they exist."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in (TASK_ID_ATTRIBUTE, USER_ID_ATTRIBUTE)
        if key.name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
