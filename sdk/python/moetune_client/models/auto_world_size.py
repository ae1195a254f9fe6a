from enum import StrEnum


class AutoWorldSize(StrEnum):
    AUTO = "auto"

    def __str__(self) -> str:
        return str(self.value)
