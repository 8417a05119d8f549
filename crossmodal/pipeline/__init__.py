"""The preparation layer: builds every prepared artefact (face shards, pair shards, pseudo-pairs, teacher
logits) and names its folder from a fingerprint of its inputs (docs/conventions.md, "Shard format")."""
