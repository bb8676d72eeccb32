"""ragkit generation: backends and chunk-KV reuse (arrives with the generation issue)."""
