"""The retention schedule exists after the worker starts and follows the setting."""

from __future__ import annotations

from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
)

from api.scheduling import ensure_retention_schedule
from schema.settings import Settings
from schema.temporal_ids import RETENTION_SCHEDULE_ID
from tests.conftest import eventually


async def test_retention_schedule_is_created_then_updated(
    temporal: Client,
    settings: Settings,
    worker: None,  # noqa: ARG001 - the triggered run needs a worker
) -> None:
    await ensure_retention_schedule(temporal, settings.task_queue, 30)
    await ensure_retention_schedule(temporal, settings.task_queue, 7)
    handle = temporal.get_schedule_handle(RETENTION_SCHEDULE_ID)
    description = await handle.describe()
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == "RetentionWorkflow"
    days = temporal.data_converter.payload_converter.from_payload(action.args[0], int)
    assert days == 7
    calendar = description.schedule.spec.calendars[0]
    assert [r.start for r in calendar.minute] == [17]
    assert (calendar.hour[0].start, calendar.hour[0].end) == (0, 23)

    await handle.trigger()

    async def triggered() -> str | None:
        actions = (await handle.describe()).info.recent_actions
        if not actions:
            return None
        action = actions[-1].action
        assert isinstance(action, ScheduleActionExecutionStartWorkflow)
        return action.workflow_id

    workflow_id: str = await eventually(triggered)
    deleted = await temporal.get_workflow_handle(workflow_id).result()
    assert isinstance(deleted, int) and deleted >= 0
