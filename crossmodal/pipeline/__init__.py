"""The preparation layer: builds artefacts (face shards, pair shards, teacher logits) and names
every artefact folder from a fingerprint of its inputs.

    fingerprint.py   input_fingerprint(): what a set is built from; shard_folder(): its folder name
    cache.py         reuse a set only when its recorded fingerprint matches; find sets by their inputs
    lock.py          one writer per output folder (a second run waits, then reuses)

A leaf for now: nothing here imports crossmodal.data, lit or tasks (the builders still live in
crossmodal/data/ and call into this package).
"""
