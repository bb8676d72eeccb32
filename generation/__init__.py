"""ragkit generation: a transformers backend that answers from retrieved chunks, reusing each
chunk's cached KV (prefix, TurboRAG-style independent chunks, CacheBlend-style blending).

Nothing heavy is imported here; ``ragkit.generation.transformers_backend`` imports torch on use.
"""
