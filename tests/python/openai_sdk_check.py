"""The official `openai` Python SDK, unmodified, against a running moetune API.

Usage: openai_sdk_check.py BASE_URL TOKEN

Every response is also validated strictly against the SDK's own pydantic types (the SDK itself parses
leniently, so a wrong shape would otherwise go unnoticed). Exits non-zero with the first mismatch.
"""

import io
import sys

import openai
from openai.types import FileDeleted, FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

base_url, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0)

GOOD = b'{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}\n' * 3


def validated(model, obj):
    model.model_validate(obj.model_dump(mode="json"))
    return obj


def expect_error(kind, code, call):
    try:
        call()
    except kind as e:
        assert e.code == code, f"{kind.__name__}: code {e.code!r}, wanted {code!r}: {e.body}"
        assert e.response.headers.get("x-request-id"), "error without x-request-id"
        return e
    raise AssertionError(f"expected {kind.__name__} ({code})")


# Files
uploaded = validated(FileObject, client.files.create(file=("train.jsonl", io.BytesIO(GOOD)), purpose="fine-tune"))
assert (uploaded.status, uploaded.bytes, uploaded.purpose) == ("processed", len(GOOD), "fine-tune"), uploaded
spare = client.files.create(file=("spare.jsonl", io.BytesIO(GOOD)), purpose="fine-tune")
assert validated(FileObject, client.files.retrieve(uploaded.id)).id == uploaded.id
listed = client.files.list(purpose="fine-tune", limit=1)
assert [f.id for f in listed.data] == [spare.id] and listed.has_more, listed
assert [f.id for f in client.files.list(purpose="fine-tune")] == [spare.id, uploaded.id]  # auto-paging
assert client.files.content(uploaded.id).read() == GOOD
deleted = validated(FileDeleted, client.files.delete(spare.id))
assert deleted.deleted and deleted.id == spare.id
expect_error(openai.NotFoundError, "not_found", lambda: client.files.retrieve(spare.id))
bad = expect_error(openai.BadRequestError, "invalid_file_format",
                   lambda: client.files.create(file=("bad.jsonl", io.BytesIO(b'{"messages": 1}\n')), purpose="fine-tune"))
assert "line 1" in bad.message, bad.message

# Jobs, created the OpenAI way
job = validated(FineTuningJob, client.fine_tuning.jobs.create(
    model="moetune/tiny-mixtral", training_file=uploaded.id, suffix="sdk", seed=7, metadata={"team": "sdk"},
    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}}}))
assert job.status == "queued" and job.seed == 7 and job.user_provided_suffix == "sdk", job
assert job.method.type == "supervised" and job.method.supervised.hyperparameters.n_epochs == 2, job.method
assert job.hyperparameters.learning_rate_multiplier == 0.5, job.hyperparameters
legacy = validated(FineTuningJob, client.fine_tuning.jobs.create(
    model="moetune/tiny-mixtral", training_file=uploaded.id, hyperparameters={"n_epochs": "auto"}))
assert validated(FineTuningJob, client.fine_tuning.jobs.retrieve(job.id)).id == job.id
assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "sdk"})] == [job.id]
page = client.fine_tuning.jobs.list(limit=1)
assert [j.id for j in page.data] == [legacy.id] and page.has_more
assert [j.id for j in client.fine_tuning.jobs.list()] == [legacy.id, job.id]
events = client.fine_tuning.jobs.list_events(job.id, limit=50)
for event in events.data:
    validated(FineTuningJobEvent, event)
assert events.data[0].message == "Files validated, job queued", [e.message for e in events.data]
assert list(client.fine_tuning.jobs.checkpoints.list(job.id)) == []

# Pause / resume / cancel. The SDK's status type does not list `pausing`/`paused` (OpenAI's API reference
# does), so those two responses are read through the SDK but not strictly validated on `status`.
paused = client.fine_tuning.jobs.pause(job.id)
assert paused.status == "paused", paused.status
expect_error(openai.ConflictError, "job_not_pausable", lambda: client.fine_tuning.jobs.pause(job.id))
resumed = validated(FineTuningJob, client.fine_tuning.jobs.resume(job.id))
assert resumed.status == "queued", resumed.status
cancelled = validated(FineTuningJob, client.fine_tuning.jobs.cancel(job.id))
assert cancelled.status == "cancelled"
expect_error(openai.ConflictError, "job_not_cancellable", lambda: client.fine_tuning.jobs.cancel(job.id))

# Errors carry OpenAI's shape: the SDK exposes code, param and message.
expect_error(openai.NotFoundError, "not_found", lambda: client.fine_tuning.jobs.retrieve("ftjob-nope"))
unknown = expect_error(openai.BadRequestError, "model_not_found",
                       lambda: client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id))
assert unknown.param == "model", unknown.param
expect_error(openai.AuthenticationError, "invalid_api_key",
             lambda: openai.OpenAI(base_url=f"{base_url}/v1", api_key="nope", max_retries=0).files.list())
print("openai SDK", openai.__version__, "ok")
