"""Member trainers: each turns (train, validation, seed) into a FittedMember (ONNX bytes, metadata, and the
library's own predict for checking the export). ``vector`` members (logistic, gbt) read ``features`` [N, 28]; the
sequence and graph members gather their inputs from the Dataset's History (FittedMember.feeds)."""
from pipeline.training.members.base import FittedMember, MemberTrainer

MEMBER_NAMES = ("logistic", "gbt", "sequence", "graph")


def trainer(name: str, **options) -> MemberTrainer:
    if name == "logistic":
        from pipeline.training.members.logistic import LogisticTrainer
        return LogisticTrainer(**options)
    if name == "gbt":
        from pipeline.training.members.gbt import GbtTrainer
        return GbtTrainer(**options)
    if name == "sequence":
        from pipeline.training.members.sequence import SequenceTrainer
        return SequenceTrainer(**options)
    if name == "graph":
        from pipeline.training.members.graph import GraphTrainer
        return GraphTrainer(**options)
    raise ValueError(f"member={name!r}; known: {', '.join(MEMBER_NAMES)}")


__all__ = ["FittedMember", "MemberTrainer", "MEMBER_NAMES", "trainer"]
