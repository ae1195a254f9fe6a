from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...models.routing_profile_object import RoutingProfileObject
from ...types import UNSET, Response, Unset


def _get_kwargs(
    id: str,
    *,
    model: str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key

    params: dict[str, Any] = {}

    params["model"] = model

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/files/{id}/routing_profile/cancel".format(
            id=quote(str(id), safe=""),
        ),
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | RoutingProfileObject | None:
    if response.status_code == 200:
        response_200 = RoutingProfileObject.from_dict(response.json())

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

    if response.status_code == 404:
        response_404 = ErrorBody.from_dict(response.json())

        return response_404

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
) -> Response[ErrorBody | RoutingProfileObject]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    id: str,
    *,
    client: AuthenticatedClient,
    model: str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,
) -> Response[ErrorBody | RoutingProfileObject]:
    """Cancel the newest routing profile of a file (under `model`, when given) that has not finished.

    Args:
        id (str):
        model (str | Unset):
        idempotency_key (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | RoutingProfileObject]
    """

    kwargs = _get_kwargs(
        id=id,
        model=model,
        idempotency_key=idempotency_key,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    id: str,
    *,
    client: AuthenticatedClient,
    model: str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,
) -> ErrorBody | RoutingProfileObject | None:
    """Cancel the newest routing profile of a file (under `model`, when given) that has not finished.

    Args:
        id (str):
        model (str | Unset):
        idempotency_key (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | RoutingProfileObject
    """

    return sync_detailed(
        id=id,
        client=client,
        model=model,
        idempotency_key=idempotency_key,
    ).parsed


async def asyncio_detailed(
    id: str,
    *,
    client: AuthenticatedClient,
    model: str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,
) -> Response[ErrorBody | RoutingProfileObject]:
    """Cancel the newest routing profile of a file (under `model`, when given) that has not finished.

    Args:
        id (str):
        model (str | Unset):
        idempotency_key (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | RoutingProfileObject]
    """

    kwargs = _get_kwargs(
        id=id,
        model=model,
        idempotency_key=idempotency_key,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    id: str,
    *,
    client: AuthenticatedClient,
    model: str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,
) -> ErrorBody | RoutingProfileObject | None:
    """Cancel the newest routing profile of a file (under `model`, when given) that has not finished.

    Args:
        id (str):
        model (str | Unset):
        idempotency_key (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | RoutingProfileObject
    """

    return (
        await asyncio_detailed(
            id=id,
            client=client,
            model=model,
            idempotency_key=idempotency_key,
        )
    ).parsed
