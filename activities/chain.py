"""Activities of ``ChainWorkflow``: sign its resume URLs, write its steps as they move, and
read the other tasks its ``task_id`` steps run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from schema import crud
from schema.crypto import resume_token
from schema.executions import ChainStart, StepsRecord, TaskLookup
from schema.orm import TaskExecution
from schema.settings import Settings


def resume_url(settings: Settings, token: str) -> str:
    return f"{settings.public_url.rstrip('/')}/api/resume/{token}"


class ChainActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    @activity.defn
    async def start_chain(self, start: ChainStart) -> dict[str, str]:
        """The resume URL of each wait step (by step id), and the steps written, pending,
        to the execution (when its running record is there already, and the database
        answers: the chain never waits for it)."""
        urls = {
            step.id: resume_url(
                self.settings, resume_token(self.settings, start.chain_workflow_id, step.id)
            )
            for step in start.steps
            if step.kind == "wait_for_webhook"
        }
        steps = [step.model_copy(update={"resume_url": urls.get(step.id)}) for step in start.steps]
        try:
            await self.record_steps(
                StepsRecord(workflow_id=start.workflow_id, run_id=start.run_id, steps=steps)
            )
        except Exception as error:  # the database is down: the chain goes on without it
            activity.logger.warning("chain steps not written yet: %r", error)
        return urls

    @activity.defn
    async def record_steps(self, record: StepsRecord) -> None:
        """Write a running chain's steps onto its execution (a finished one keeps its own)."""
        steps = [step.model_dump(mode="json") for step in record.steps]
        async with self.sessions.begin() as session:
            statement = (
                update(TaskExecution)
                .where(
                    TaskExecution.workflow_id == record.workflow_id,
                    TaskExecution.run_id == record.run_id,
                    TaskExecution.status == "running",
                )
                .values(steps=steps)
            )
            await session.execute(statement.execution_options(synchronize_session=False))

    @activity.defn
    async def load_task(self, lookup: TaskLookup) -> dict[str, Any] | None:
        """The spec of the user's task a ``task_id`` step runs, or None when it is gone (or
        not theirs)."""
        async with self.sessions() as session:
            task = await crud.get_task(session, user_id=lookup.user_id, task_id=lookup.task_id)
            if task is None:
                return None
            spec: dict[str, Any] = crud.task_spec(task).model_dump(mode="json")
            return spec
