from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...models.expert_usage_list import ExpertUsageList
from ...types import UNSET, Response, Unset


def _get_kwargs(
    id: str,
    *,
    after: None | str | Unset = UNSET,
    limit: int | None | Unset = UNSET,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    json_after: None | str | Unset
    if isinstance(after, Unset):
        json_after = UNSET
    else:
        json_after = after
    params["after"] = json_after

    json_limit: int | None | Unset
    if isinstance(limit, Unset):
        json_limit = UNSET
    else:
        json_limit = limit
    params["limit"] = json_limit

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/fine_tuning/jobs/{id}/expert_usage".format(
            id=quote(str(id), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | ExpertUsageList | None:
    if response.status_code == 200:
        response_200 = ExpertUsageList.from_dict(response.json())

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

    if response.status_code == 429:
        response_429 = ErrorBody.from_dict(response.json())

        return response_429

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorBody | ExpertUsageList]:
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
    after: None | str | Unset = UNSET,
    limit: int | None | Unset = UNSET,
) -> Response[ErrorBody | ExpertUsageList]:
    """List the job's expert-usage monitor checks, newest first: per MoE layer, every expert's share of
    the routed tokens, the layer's concentration (`top1_share`, `entropy_norm`, `kl_to_uniform`), and
    the routing drift from the base model on the validation data that `monitor.max_routing_drift`
    guards.

    Args:
        id (str):
        after (None | str | Unset):
        limit (int | None | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | ExpertUsageList]
    """

    kwargs = _get_kwargs(
        id=id,
        after=after,
        limit=limit,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    id: str,
    *,
    client: AuthenticatedClient,
    after: None | str | Unset = UNSET,
    limit: int | None | Unset = UNSET,
) -> ErrorBody | ExpertUsageList | None:
    """List the job's expert-usage monitor checks, newest first: per MoE layer, every expert's share of
    the routed tokens, the layer's concentration (`top1_share`, `entropy_norm`, `kl_to_uniform`), and
    the routing drift from the base model on the validation data that `monitor.max_routing_drift`
    guards.

    Args:
        id (str):
        after (None | str | Unset):
        limit (int | None | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | ExpertUsageList
    """

    return sync_detailed(
        id=id,
        client=client,
        after=after,
        limit=limit,
    ).parsed


async def asyncio_detailed(
    id: str,
    *,
    client: AuthenticatedClient,
    after: None | str | Unset = UNSET,
    limit: int | None | Unset = UNSET,
) -> Response[ErrorBody | ExpertUsageList]:
    """List the job's expert-usage monitor checks, newest first: per MoE layer, every expert's share of
    the routed tokens, the layer's concentration (`top1_share`, `entropy_norm`, `kl_to_uniform`), and
    the routing drift from the base model on the validation data that `monitor.max_routing_drift`
    guards.

    Args:
        id (str):
        after (None | str | Unset):
        limit (int | None | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | ExpertUsageList]
    """

    kwargs = _get_kwargs(
        id=id,
        after=after,
        limit=limit,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    id: str,
    *,
    client: AuthenticatedClient,
    after: None | str | Unset = UNSET,
    limit: int | None | Unset = UNSET,
) -> ErrorBody | ExpertUsageList | None:
    """List the job's expert-usage monitor checks, newest first: per MoE layer, every expert's share of
    the routed tokens, the layer's concentration (`top1_share`, `entropy_norm`, `kl_to_uniform`), and
    the routing drift from the base model on the validation data that `monitor.max_routing_drift`
    guards.

    Args:
        id (str):
        after (None | str | Unset):
        limit (int | None | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | ExpertUsageList
    """

    return (
        await asyncio_detailed(
            id=id,
            client=client,
            after=after,
            limit=limit,
        )
    ).parsed
