"""Studies by name. ``STUDIES`` is a plain dict: name -> :class:`Study`."""

from __future__ import annotations

from genlab.studies import attention, classify, grokking, layerwise, lock, lottery
from genlab.studies.base import Study

STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        classify.STUDY,
        grokking.STUDY,
        attention.STUDY,
        layerwise.STUDY,
        lottery.STUDY,
        lock.STUDY,
    )
}

__all__ = ["STUDIES", "Study"]
