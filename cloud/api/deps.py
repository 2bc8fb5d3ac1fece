"""FastAPI dependencies shared by the core routes and the domains' routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cloud.api.auth import Principal, require
from cloud.config import Role
from cloud.context import CloudContext

ALL_READERS = (Role.OPS, Role.STAFF)
Ops = Annotated[Principal, Depends(require(Role.OPS))]
Reader = Annotated[Principal, Depends(require(*ALL_READERS))]
Shopping = Annotated[Principal, Depends(require(Role.OPS, Role.STAFF, Role.SHOPPER_APP))]
ShopperApp = Annotated[Principal, Depends(require(Role.OPS, Role.SHOPPER_APP))]


def get_cloud(request: Request) -> CloudContext:
    cloud: CloudContext = request.app.state.cloud
    return cloud


Cloud = Annotated[CloudContext, Depends(get_cloud)]
