"""ragkit chunkers: one strategy per file, each a dataclass with ``chunk(doc) -> list[Chunk]``."""
