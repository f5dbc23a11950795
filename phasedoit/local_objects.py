"""The local endpoint's S3 objects, kept on disk: moto holds them in memory only.

The stacks the endpoint restores after a restart need them: a Lambda function is created again from its
code's S3 object, a nested stack from its template's. Saved with the stacks (after each change of a
stack), restored before them. Objects are files named by a hash of where they are; an index says where.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from phasedoit.local_files import read_json, write_json

INDEX = "index.json"


def _s3_backends() -> Any:
    from moto.s3.models import s3_backends  # the server process's moto, as local_server uses it

    return s3_backends


def _objects() -> Iterator[tuple[dict[str, str], Any]]:
    """(where, moto's object) for every object of every account's buckets."""
    for account, partitions in list(_s3_backends().items()):
        for partition, backend in list(partitions.items()):
            for bucket in list(backend.buckets.values()):
                for name, key in list(bucket.keys.items()):
                    where = {"account": account, "partition": partition, "region": bucket.region_name}
                    yield {**where, "bucket": bucket.name, "key": name}, key


class Objects:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index: dict[str, dict[str, str]] = (read_json(folder / INDEX) or {}).get("objects", {})

    def save(self) -> None:
        """Write the objects that are new or changed since the last save; forget the deleted ones."""
        found: dict[str, dict[str, str]] = {}
        for where, key in _objects():
            name = hashlib.sha256(json.dumps(where, sort_keys=True).encode()).hexdigest()
            entry = {**where, "etag": key.etag}
            if self.index.get(name) != entry:
                self.folder.mkdir(parents=True, exist_ok=True)
                (self.folder / name).write_bytes(key.value)
            found[name] = entry
        if found != self.index:
            for gone in set(self.index) - set(found):
                (self.folder / gone).unlink(missing_ok=True)
            write_json(self.folder / INDEX, {"objects": found})
            self.index = found

    def restore(self) -> int:
        """Put the saved objects back into moto (buckets first); how many."""
        backends = _s3_backends()
        for name, entry in self.index.items():
            backend = backends[entry["account"]][entry["partition"]]
            if entry["bucket"] not in backend.buckets:
                backend.create_bucket(entry["bucket"], entry["region"])
            try:
                data = (self.folder / name).read_bytes()
            except OSError:
                continue  # lost: a deploy uploads it again (its HeadObject finds it missing)
            backend.put_object(entry["bucket"], entry["key"], data)
        return len(self.index)
