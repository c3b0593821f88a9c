"""Projects (Keystone's side, as far as the inventory needs it), each change inside one :class:`Tx`.

Both :mod:`.compute_ops` and :mod:`.network_ops` resolve the owning project; it lives here so
neither imports the other for it.
"""

from __future__ import annotations

from sqlalchemy import func, select

from cloudmeta.inventory import queries
from cloudmeta.inventory.errors import Conflict
from cloudmeta.inventory.models import Keypair, Network, Port, Project, Router, Server, Subnet
from cloudmeta.inventory.store import Tx

__all__ = ["DEFAULT_PROJECT", "create_project", "delete_project", "project_id", "resolve_project"]

DEFAULT_PROJECT = "default"


async def resolve_project(tx: Tx, project_id: str | None) -> Project:
    """The given project, or the ``default`` project (created on first use)."""
    if project_id is not None:
        return await queries.get(tx.session, Project, project_id)
    project = await tx.session.scalar(select(Project).where(Project.name == DEFAULT_PROJECT))
    if project is None:
        project = Project(name=DEFAULT_PROJECT)
        tx.session.add(project)
        await tx.session.flush()
        tx.record("project", project.id, "create", {})
    return project


async def project_id(tx: Tx, given: str | None) -> str:
    """The id of :func:`resolve_project`'s answer."""
    return (await resolve_project(tx, given)).id


async def create_project(tx: Tx, name: str) -> Project:
    if await tx.session.scalar(select(Project.id).where(Project.name == name)):
        raise Conflict(f"name: a project named {name!r} exists")
    project = Project(name=name)
    tx.session.add(project)
    await tx.session.flush()
    tx.record("project", project.id, "create", {})
    return project


async def delete_project(tx: Tx, project_id: str) -> None:
    project = await queries.get(tx.session, Project, project_id)
    for model in (Network, Subnet, Port, Router, Server, Keypair):
        used = await tx.session.scalar(
            select(func.count()).select_from(model).where(model.project_id == project_id)
        )
        if used:
            raise Conflict(f"project_id: project {project.name!r} still owns {model.__tablename__}")
    await tx.session.delete(project)
    tx.record("project", project_id, "delete", {})
