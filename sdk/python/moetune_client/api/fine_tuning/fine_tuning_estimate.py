from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.create_job_request import CreateJobRequest
from ...models.error_body import ErrorBody
from ...models.job_estimate import JobEstimate
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    body: CreateJobRequest,
    idempotency_key: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/fine_tuning/jobs/estimate",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | JobEstimate | None:
    if response.status_code == 200:
        response_200 = JobEstimate.from_dict(response.json())

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
) -> Response[ErrorBody | JobEstimate]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    body: CreateJobRequest,
    idempotency_key: str | Unset = UNSET,
) -> Response[ErrorBody | JobEstimate]:
    """Estimate a fine-tuning job before creating it: from the same body as `POST /v1/fine_tuning/jobs`,
    the steps and tokens it would train, the memory it needs per stage, which classes of registered
    runners fit it (or why none does) and how long it would take on each, from what runners of the
    class measured on recent jobs of the same model and method. Creates nothing and takes no quota.

    Args:
        idempotency_key (str | Unset):
        body (CreateJobRequest): Body of `POST /v1/fine_tuning/jobs` (the OpenAI shape;
            `method.moe_sft_qat` carries MoE options).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | JobEstimate]
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
    body: CreateJobRequest,
    idempotency_key: str | Unset = UNSET,
) -> ErrorBody | JobEstimate | None:
    """Estimate a fine-tuning job before creating it: from the same body as `POST /v1/fine_tuning/jobs`,
    the steps and tokens it would train, the memory it needs per stage, which classes of registered
    runners fit it (or why none does) and how long it would take on each, from what runners of the
    class measured on recent jobs of the same model and method. Creates nothing and takes no quota.

    Args:
        idempotency_key (str | Unset):
        body (CreateJobRequest): Body of `POST /v1/fine_tuning/jobs` (the OpenAI shape;
            `method.moe_sft_qat` carries MoE options).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | JobEstimate
    """

    return sync_detailed(
        client=client,
        body=body,
        idempotency_key=idempotency_key,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    body: CreateJobRequest,
    idempotency_key: str | Unset = UNSET,
) -> Response[ErrorBody | JobEstimate]:
    """Estimate a fine-tuning job before creating it: from the same body as `POST /v1/fine_tuning/jobs`,
    the steps and tokens it would train, the memory it needs per stage, which classes of registered
    runners fit it (or why none does) and how long it would take on each, from what runners of the
    class measured on recent jobs of the same model and method. Creates nothing and takes no quota.

    Args:
        idempotency_key (str | Unset):
        body (CreateJobRequest): Body of `POST /v1/fine_tuning/jobs` (the OpenAI shape;
            `method.moe_sft_qat` carries MoE options).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | JobEstimate]
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
    body: CreateJobRequest,
    idempotency_key: str | Unset = UNSET,
) -> ErrorBody | JobEstimate | None:
    """Estimate a fine-tuning job before creating it: from the same body as `POST /v1/fine_tuning/jobs`,
    the steps and tokens it would train, the memory it needs per stage, which classes of registered
    runners fit it (or why none does) and how long it would take on each, from what runners of the
    class measured on recent jobs of the same model and method. Creates nothing and takes no quota.

    Args:
        idempotency_key (str | Unset):
        body (CreateJobRequest): Body of `POST /v1/fine_tuning/jobs` (the OpenAI shape;
            `method.moe_sft_qat` carries MoE options).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | JobEstimate
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            idempotency_key=idempotency_key,
        )
    ).parsed
