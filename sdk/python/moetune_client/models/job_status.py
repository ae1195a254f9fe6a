from enum import StrEnum


class JobStatus(StrEnum):
    CANCELLED = "cancelled"
    FAILED = "failed"
    PAUSED = "paused"
    PAUSING = "pausing"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    VALIDATING_FILES = "validating_files"

    def __str__(self) -> str:
        return str(self.value)
