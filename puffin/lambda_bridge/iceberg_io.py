"""``CachedFileIO``: the pyiceberg FileIO an Engine function reads a cached Iceberg fragment with.

The warm-partition cache (``cache.py``) copies a fragment's Iceberg data and delete files to
/tmp and names the copies in the read's FileIO properties; pyiceberg's reader then opens every
file through ``FileIO.new_input(path)``, which here returns the local copy for those paths and
goes to the table's own FileIO (by its ``py-io-impl``, else by the table location's scheme) for
anything else. Paths stay the S3 ones, so position delete files still match their data files.
Imported only when a fragment reads Iceberg (pyiceberg is not needed to import the handler).
"""

from __future__ import annotations

import json

from pyiceberg.io import PY_IO_IMPL, FileIO, load_file_io
from pyiceberg.io.pyarrow import PyArrowFileIO

FILES, LOCATION, INNER = "puffin.cache.files", "puffin.cache.location", "puffin.cache.io-impl"


def properties(io_properties: dict, local: dict[str, str], location: str) -> dict:
    """The read's FileIO properties reading ``local`` (S3 path -> local copy) from the cache."""
    props = {**io_properties, PY_IO_IMPL: f"{__name__}.CachedFileIO", FILES: json.dumps(local), LOCATION: location}
    if io_properties.get(PY_IO_IMPL):
        props[INNER] = io_properties[PY_IO_IMPL]
    return props


class CachedFileIO(FileIO):
    def __init__(self, properties=None):
        properties = dict(properties or {})
        super().__init__(properties)
        self.local: dict[str, str] = json.loads(properties.get(FILES) or "{}")
        inner = {k: v for k, v in properties.items() if k not in (PY_IO_IMPL, FILES, LOCATION, INNER)}
        if properties.get(INNER):
            inner[PY_IO_IMPL] = properties[INNER]
        self.inner = load_file_io(inner, properties.get(LOCATION))
        self.here = PyArrowFileIO()

    def new_input(self, location: str):
        local = self.local.get(location)
        return self.here.new_input(local) if local is not None else self.inner.new_input(location)

    def new_output(self, location: str):
        return self.inner.new_output(location)

    def delete(self, location) -> None:
        self.inner.delete(location)
