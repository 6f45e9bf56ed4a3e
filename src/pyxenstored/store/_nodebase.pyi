# The compiled node storage (_nodebase.c): NodeBase keeps nodebase.PureNodeBase's contract
# (the tests hold both builds to it), so the type checker is told it is that class.
from .nodebase import PureNodeBase as NodeBase

__all__ = ["NodeBase", "derive"]

def derive(qualified_name: str, base: type, /) -> type: ...
