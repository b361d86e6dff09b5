"""The caller's tenant's limits: read the effective values, replace the overrides. Admin scope.

PUT takes the whole override set: a field left out (or null) falls back to the deployment's default;
0 means no limit. Out-of-range values are refused with 400 and nothing is stored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from lambdas.api.deps import Caller, DepsDep, require_scope
from lambdas.services.limits import LimitService, LimitSet, default_limits

router = APIRouter(prefix="/v1/limits", tags=["limits"])
AdminDep = Annotated[Caller, Depends(require_scope("admin"))]


class TenantLimits(BaseModel):
    tenant: str
    limits: LimitSet
    overrides: LimitSet
    defaults: LimitSet


def _view(service: LimitService, tenant: str) -> TenantLimits:
    overrides = service.overrides(tenant)
    return TenantLimits(tenant=tenant, limits=service.limits(tenant), overrides=overrides,
                        defaults=default_limits(service.s))


@router.get("", response_model=TenantLimits, response_model_by_alias=True)
def get_limits(caller: AdminDep, d: DepsDep) -> TenantLimits:
    return _view(LimitService(d), caller.tenant_id)


@router.put("", response_model=TenantLimits, response_model_by_alias=True)
def put_limits(body: LimitSet, caller: AdminDep, d: DepsDep) -> TenantLimits:
    service = LimitService(d)
    service.set_overrides(caller.tenant_id, body, updated_by=caller.user_id)
    return _view(service, caller.tenant_id)
