from enum import StrEnum


class RouterMode(StrEnum):
    FREEZE = "freeze"
    TRAIN = "train"

    def __str__(self) -> str:
        return str(self.value)
