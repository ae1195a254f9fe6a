from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...models.tenant_object import TenantObject
from ...models.tenant_request import TenantRequest
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    body: TenantRequest,
    idempotency_key: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/admin/tenants",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | TenantObject | None:
    if response.status_code == 200:
        response_200 = TenantObject.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = ErrorBody.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = ErrorBody.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = ErrorBody.from_dict(response.json())

        return response_403

    if response.status_code == 409:
        response_409 = ErrorBody.from_dict(response.json())

        return response_409

    if response.status_code == 429:
        response_429 = ErrorBody.from_dict(response.json())

        return response_429

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorBody | TenantObject]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    body: TenantRequest,
    idempotency_key: str | Unset = UNSET,
) -> Response[ErrorBody | TenantObject]:
    """Create a tenant or change its quotas.

    Args:
        idempotency_key (str | Unset):
        body (TenantRequest): Body of `POST /v1/admin/tenants`: creates the tenant or updates its
            limits. A limit left out keeps
            its current value; `null` returns it to the server default.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | TenantObject]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient,
    body: TenantRequest,
    idempotency_key: str | Unset = UNSET,
) -> ErrorBody | TenantObject | None:
    """Create a tenant or change its quotas.

    Args:
        idempotency_key (str | Unset):
        body (TenantRequest): Body of `POST /v1/admin/tenants`: creates the tenant or updates its
            limits. A limit left out keeps
            its current value; `null` returns it to the server default.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | TenantObject
    """

    return sync_detailed(
        client=client,
        body=body,
        idempotency_key=idempotency_key,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    body: TenantRequest,
    idempotency_key: str | Unset = UNSET,
) -> Response[ErrorBody | TenantObject]:
    """Create a tenant or change its quotas.

    Args:
        idempotency_key (str | Unset):
        body (TenantRequest): Body of `POST /v1/admin/tenants`: creates the tenant or updates its
            limits. A limit left out keeps
            its current value; `null` returns it to the server default.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | TenantObject]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient,
    body: TenantRequest,
    idempotency_key: str | Unset = UNSET,
) -> ErrorBody | TenantObject | None:
    """Create a tenant or change its quotas.

    Args:
        idempotency_key (str | Unset):
        body (TenantRequest): Body of `POST /v1/admin/tenants`: creates the tenant or updates its
            limits. A limit left out keeps
            its current value; `null` returns it to the server default.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | TenantObject
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            idempotency_key=idempotency_key,
        )
    ).parsed
