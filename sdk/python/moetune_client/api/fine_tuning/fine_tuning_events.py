from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...models.event_list import EventList
from ...types import UNSET, Response, Unset


def _get_kwargs(
    id: str,
    *,
    after: None | str | Unset = UNSET,
    limit: int | None | Unset = UNSET,
    stream: bool | None | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(last_event_id, Unset):
        headers["Last-Event-ID"] = last_event_id

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

    json_stream: bool | None | Unset
    if isinstance(stream, Unset):
        json_stream = UNSET
    else:
        json_stream = stream
    params["stream"] = json_stream

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/fine_tuning/jobs/{id}/events".format(
            id=quote(str(id), safe=""),
        ),
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | EventList | None:
    if response.status_code == 200:
        response_200 = EventList.from_dict(response.json())

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
) -> Response[ErrorBody | EventList]:
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
    stream: bool | None | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> Response[ErrorBody | EventList]:
    """List a job's events, newest first: status changes, messages and per-step metrics. With
    `stream=true`, a `text/event-stream` of the events as they happen (`id: ftevent-N`, `event:` the
    event type, `data:` the event object), ending with `event: done` once the job has finished.

    Args:
        id (str):
        after (None | str | Unset):
        limit (int | None | Unset):
        stream (bool | None | Unset):
        last_event_id (None | str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | EventList]
    """

    kwargs = _get_kwargs(
        id=id,
        after=after,
        limit=limit,
        stream=stream,
        last_event_id=last_event_id,
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
    stream: bool | None | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> ErrorBody | EventList | None:
    """List a job's events, newest first: status changes, messages and per-step metrics. With
    `stream=true`, a `text/event-stream` of the events as they happen (`id: ftevent-N`, `event:` the
    event type, `data:` the event object), ending with `event: done` once the job has finished.

    Args:
        id (str):
        after (None | str | Unset):
        limit (int | None | Unset):
        stream (bool | None | Unset):
        last_event_id (None | str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | EventList
    """

    return sync_detailed(
        id=id,
        client=client,
        after=after,
        limit=limit,
        stream=stream,
        last_event_id=last_event_id,
    ).parsed


async def asyncio_detailed(
    id: str,
    *,
    client: AuthenticatedClient,
    after: None | str | Unset = UNSET,
    limit: int | None | Unset = UNSET,
    stream: bool | None | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> Response[ErrorBody | EventList]:
    """List a job's events, newest first: status changes, messages and per-step metrics. With
    `stream=true`, a `text/event-stream` of the events as they happen (`id: ftevent-N`, `event:` the
    event type, `data:` the event object), ending with `event: done` once the job has finished.

    Args:
        id (str):
        after (None | str | Unset):
        limit (int | None | Unset):
        stream (bool | None | Unset):
        last_event_id (None | str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | EventList]
    """

    kwargs = _get_kwargs(
        id=id,
        after=after,
        limit=limit,
        stream=stream,
        last_event_id=last_event_id,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    id: str,
    *,
    client: AuthenticatedClient,
    after: None | str | Unset = UNSET,
    limit: int | None | Unset = UNSET,
    stream: bool | None | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> ErrorBody | EventList | None:
    """List a job's events, newest first: status changes, messages and per-step metrics. With
    `stream=true`, a `text/event-stream` of the events as they happen (`id: ftevent-N`, `event:` the
    event type, `data:` the event object), ending with `event: done` once the job has finished.

    Args:
        id (str):
        after (None | str | Unset):
        limit (int | None | Unset):
        stream (bool | None | Unset):
        last_event_id (None | str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | EventList
    """

    return (
        await asyncio_detailed(
            id=id,
            client=client,
            after=after,
            limit=limit,
            stream=stream,
            last_event_id=last_event_id,
        )
    ).parsed
