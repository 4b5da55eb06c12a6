"""How xdist spreads a sequential run: one sequence to one worker, whole and in order.

xdist's scope scheduling sends all the tests of one scope to one worker; its scope is the
test's module (`tinyworld-sequential.yaml`), which keeps the suite's one sequence together.
With --wild-orders each order is its own sequence, so the scope is the order
(`...::sw-0001@order-2` -> `order-2`), and K orders spread over the workers. Subclassing
`LoadScopeScheduling` and overriding `_split_scope` is how xdist's own file scheduling
(`LoadFileScheduling`) chooses its scope."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling


class SequenceScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        name = nodeid.rsplit("::", 1)[-1]
        case, marker, order = name.rpartition("@order-")
        return f"order-{order}" if marker and order.isdigit() else nodeid.rsplit("::", 1)[0]
