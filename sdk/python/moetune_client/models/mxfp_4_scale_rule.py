from enum import StrEnum


class Mxfp4ScaleRule(StrEnum):
    CEIL = "ceil"
    OCP = "ocp"

    def __str__(self) -> str:
        return str(self.value)
