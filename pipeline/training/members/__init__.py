"""Member trainers: each turns (train, validation, seed) into a FittedMember (ONNX bytes, metadata, and the
library's own predict for checking the export). Only ``vector`` members exist yet (input ``features`` [N, 28]);
a sequence or graph member adds its own input builder over the same Dataset."""
from pipeline.training.members.base import FittedMember, MemberTrainer

MEMBER_NAMES = ("logistic", "gbt")


def trainer(name: str, **options) -> MemberTrainer:
    if name == "logistic":
        from pipeline.training.members.logistic import LogisticTrainer
        return LogisticTrainer(**options)
    if name == "gbt":
        from pipeline.training.members.gbt import GbtTrainer
        return GbtTrainer(**options)
    raise ValueError(f"member={name!r}; known: {', '.join(MEMBER_NAMES)}")


__all__ = ["FittedMember", "MemberTrainer", "MEMBER_NAMES", "trainer"]
