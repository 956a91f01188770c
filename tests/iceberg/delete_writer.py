"""Merge-on-read position deletes for an Iceberg v2 table, written with pyiceberg's own pieces.

Tests need tables whose current snapshot carries a real positional delete file, also when the
warehouse is on S3 (SeaweedFS). Spark cannot write to S3 here (tests/iceberg/README.md) and
pyiceberg 0.12 has no API that writes delete files (its ``delete()`` is copy-on-write), so this
module does what a merge-on-read ``DELETE`` commits (Iceberg spec v2, a ``RowDelta`` that only
adds delete files):

1. one Parquet position-delete file per data file (``file_path``, ``pos``; reserved field ids
   2147483546 and 2147483545; sorted by pos; full metrics, so the ``file_path`` bounds name the
   data file), through the table's FileIO;
2. a DELETES manifest listing them as ADDED entries with a null sequence number, which readers
   inherit from the manifest list: the new snapshot's sequence number, higher than every data
   file's, so the deletes apply to those files;
3. a manifest list with all of the parent snapshot's manifests plus that one;
4. a ``delete`` snapshot, committed through the catalog together with ``main`` moving to it,
   under the requirement that ``main`` still points at the parent.

    snapshot_id = add_position_deletes(table, {data_file_path: [0, 3]})
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
)
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestWriterV2,
    write_manifest_list,
)
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import Operation, Snapshot, SnapshotSummaryCollector, Summary, update_snapshot_summaries
from pyiceberg.table.update import AddSnapshotUpdate, AssertRefSnapshotId, SetSnapshotRefUpdate
from pyiceberg.types import LongType, NestedField, StringType

# The position delete file schema, with the field ids the spec reserves for it.
POSITION_DELETE_SCHEMA = Schema(
    NestedField(2147483546, "file_path", StringType(), required=True),
    NestedField(2147483545, "pos", LongType(), required=True),
)
# Exact (untruncated) bounds: lower == upper == the data file path marks a file-scoped delete.
_FULL_METRICS = {"write.metadata.metrics.default": "full"}


class _DeleteManifestWriter(ManifestWriterV2):
    """ManifestWriterV2 hardcodes content DATA; a manifest of delete files says DELETES."""

    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


def add_position_deletes(table: Table, deletes: dict[str, list[int]]) -> int:
    """Commit a new snapshot to `table` (a pyiceberg Table) that adds one positional delete
    file per data file path in `deletes` (path -> row positions to delete), leaving the data
    files untouched. Returns the new snapshot id."""
    metadata = table.metadata
    if metadata.format_version != 2:
        raise ValueError(f"position delete files need format-version 2, not {metadata.format_version}")
    parent = table.current_snapshot()
    if parent is None:
        raise ValueError("the table has no snapshot to delete from")

    live = {
        entry.data_file.file_path: entry.data_file
        for manifest in parent.manifests(table.io)
        if manifest.content == ManifestContent.DATA
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    }
    snapshot_id = metadata.new_snapshot_id()
    sequence_number = metadata.next_sequence_number()
    commit_uuid = uuid.uuid4()
    locations = table.location_provider()
    compression = metadata.properties.get(
        TableProperties.WRITE_AVRO_COMPRESSION, TableProperties.WRITE_AVRO_COMPRESSION_DEFAULT
    )
    arrow_schema = schema_to_pyarrow(POSITION_DELETE_SCHEMA)
    schema, specs = metadata.schema(), metadata.specs()

    delete_files: list[DataFile] = []
    for n, (path, positions) in enumerate(deletes.items()):
        if (data_file := live.get(path)) is None:
            raise KeyError(f"not a live data file of snapshot {parent.snapshot_id}: {path}")
        positions = sorted(set(positions))
        if not positions or positions[0] < 0 or positions[-1] >= data_file.record_count:
            raise ValueError(f"positions must be in [0, {data_file.record_count}) for {path}: {positions}")
        spec = specs[data_file.spec_id]
        # Next to the data, in its partition's folder, as Spark does: <data path>/ts_day=2024-01-01/...
        folder = (
            f"{locations.data_path}/{spec.partition_to_path(data_file.partition, schema)}"
            if spec.fields
            else locations.data_path
        )
        location = f"{folder}/{commit_uuid}-{n:05d}-deletes.parquet"

        rows = pa.table({"file_path": [path] * len(positions), "pos": positions}, schema=arrow_schema)
        output = table.io.new_output(location)
        footers: list[pq.FileMetaData] = []
        with output.create(overwrite=False) as stream:
            pq.write_table(rows, stream, metadata_collector=footers)
        stats = data_file_statistics_from_parquet_metadata(
            footers[0],
            compute_statistics_plan(POSITION_DELETE_SCHEMA, _FULL_METRICS),
            parquet_path_to_id_mapping(POSITION_DELETE_SCHEMA),
        )
        delete_file = DataFile.from_args(
            content=DataFileContent.POSITION_DELETES,
            file_path=location,
            file_format=FileFormat.PARQUET,
            partition=data_file.partition,
            file_size_in_bytes=len(output),
            **stats.to_serialized_dict(),  # record_count, column sizes/counts, bounds
        )
        delete_file.spec_id = data_file.spec_id  # not a field of the record, so not a from_args argument
        delete_files.append(delete_file)

    # One DELETES manifest per partition spec: a manifest's partition tuples follow one spec.
    new_manifests = []
    for spec_id in sorted({f.spec_id for f in delete_files}):
        manifest_path = locations.new_metadata_location(f"{commit_uuid}-m{spec_id}.avro")
        with _DeleteManifestWriter(
            spec=specs[spec_id],
            schema=schema,
            output_file=table.io.new_output(manifest_path),
            snapshot_id=snapshot_id,
            avro_compression=compression,
        ) as writer:
            for delete_file in delete_files:
                if delete_file.spec_id == spec_id:
                    writer.add_entry(
                        ManifestEntry.from_args(
                            status=ManifestEntryStatus.ADDED,
                            snapshot_id=snapshot_id,
                            sequence_number=None,  # inherited: this snapshot's sequence number
                            file_sequence_number=None,
                            data_file=delete_file,
                        )
                    )
        new_manifests.append(writer.to_manifest_file())

    manifest_list = locations.new_metadata_location(f"snap-{snapshot_id}-0-{commit_uuid}.avro")
    with write_manifest_list(
        format_version=2,
        output_file=table.io.new_output(manifest_list),
        snapshot_id=snapshot_id,
        parent_snapshot_id=parent.snapshot_id,
        sequence_number=sequence_number,
        avro_compression=compression,
    ) as list_writer:
        list_writer.add_manifests(new_manifests + parent.manifests(table.io))

    collector = SnapshotSummaryCollector()
    for delete_file in delete_files:
        collector.add_file(delete_file, schema=schema, partition_spec=specs[delete_file.spec_id])
    summary = update_snapshot_summaries(Summary(operation=Operation.DELETE, **collector.build()), parent.summary)
    snapshot = Snapshot(
        snapshot_id=snapshot_id,
        parent_snapshot_id=parent.snapshot_id,
        sequence_number=sequence_number,
        manifest_list=manifest_list,
        summary=summary,
        schema_id=metadata.current_schema_id,
    )
    with table.transaction() as tx:
        tx._apply(
            (
                AddSnapshotUpdate(snapshot=snapshot),
                SetSnapshotRefUpdate(
                    ref_name=MAIN_BRANCH,
                    type=SnapshotRefType.BRANCH,
                    snapshot_id=snapshot_id,
                    parent_snapshot_id=parent.snapshot_id,
                ),
            ),
            (AssertRefSnapshotId(ref=MAIN_BRANCH, snapshot_id=parent.snapshot_id),),
        )
    return snapshot_id
