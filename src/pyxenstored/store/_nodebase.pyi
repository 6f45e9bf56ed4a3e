# The compiled node storage (_nodebase.c); its contract is store/nodebase.py's.
from ..protocol.perms import Perms

class NodeBase:
    value: bytes
    perms: Perms
    children: tuple[str, ...] | list[str] | dict[str, None]
    gen: int
    def __init__(
        self,
        value: bytes,
        perms: Perms,
        children: tuple[str, ...] | list[str] | dict[str, None] | None = None,
        gen: int = 0,
    ) -> None: ...

def derive(qualified_name: str, base: type, /) -> type: ...
