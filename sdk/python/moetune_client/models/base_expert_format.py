from enum import StrEnum


class BaseExpertFormat(StrEnum):
    BF16 = "bf16"
    MXFP4 = "mxfp4"
    NVFP4 = "nvfp4"

    def __str__(self) -> str:
        return str(self.value)
