"""A whole fine-tuning job through the generated Python SDK (sdk/python/moetune_client), as a tenant
would write it: upload, create, follow, read the artifacts and download one. Prints a JSON summary
for tests/tests/sdk.rs. Usage: sdk_job.py BASE_URL TOKEN DATASET"""

import hashlib
import json
import sys
import time

from moetune_client import AuthenticatedClient
from moetune_client.api.files import files_upload
from moetune_client.api.fine_tuning import (
    fine_tuning_create,
    fine_tuning_download_artifact,
    fine_tuning_events,
    fine_tuning_list_artifacts,
    fine_tuning_retrieve,
)
from moetune_client.models import CreateJobRequest, ErrorBody, JobStatus, UploadForm
from moetune_client.types import File

base, token, dataset = sys.argv[1:4]
client = AuthenticatedClient(base_url=base, token=token, timeout=60)


def ok(result):
    """The SDK returns the documented error body instead of raising: fail loudly on one."""
    if result is None or isinstance(result, ErrorBody):
        raise SystemExit(f"API error: {result.error.message if result else 'no answer'}")
    return result


with open(dataset, "rb") as f:
    uploaded = ok(files_upload.sync(client=client, body=UploadForm(file=File(payload=f, file_name="data.jsonl"), purpose="fine-tune")))

request = CreateJobRequest.from_dict(
    {
        "model": "moetune/tiny-mixtral",
        "training_file": uploaded.id,
        "suffix": "python-sdk",
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 6, "qat": {"steps": 2}, "monitor": {"every_n_steps": 3}}},
    }
)
job = ok(fine_tuning_create.sync(client=client, body=request, idempotency_key="python-sdk-job"))
deadline = time.time() + 240
while job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
    if time.time() > deadline:
        raise SystemExit(f"job {job.id} still {job.status} after 240 s")
    time.sleep(0.5)
    job = ok(fine_tuning_retrieve.sync(job.id, client=client))

artifacts = ok(fine_tuning_list_artifacts.sync(job.id, client=client)).data
config = next(a for a in artifacts if a.name == "merged/config.json")
downloaded = ok(fine_tuning_download_artifact.sync(job.id, config.name, client=client)).payload.read()
events = ok(fine_tuning_events.sync(job.id, client=client, limit=1000)).data
print(
    json.dumps(
        {
            "file_format": uploaded.format_,
            "job": job.id,
            "status": job.status.value,
            "fine_tuned_model": job.fine_tuned_model,
            "artifacts": sorted(a.name for a in artifacts),
            "config_sha256_matches": hashlib.sha256(downloaded).hexdigest() == config.sha256,
            "metrics_events": sum(1 for e in events if e.type_ == "metrics"),
        }
    )
)
