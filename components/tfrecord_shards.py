"""GZIP TFRecord files written without TensorFlow, in parts that join into shards.

Beam workers write their records where they are produced, one *part* file per
bundle and shard, instead of sending every record through a GroupByKey to a
shard writer; one finalising step then turns the parts into the numbered
shards. A part is a complete GZIP file (TensorFlow, ``gzip`` and Beam read
it), built so that several parts of one shard join without recompressing:

- the deflate stream ends with a sync flush (byte-aligned, no final block),
  then an empty final block (``03 00``) and the GZIP trailer;
- joining keeps the first header, concatenates the deflate bodies, appends one
  empty final block and a trailer whose CRC-32 is combined from the parts'.

(Concatenated GZIP *members* would be valid GZIP, but TensorFlow's reader stops
after the first member.) File access goes through Beam's ``FileSystems``, so
``gs://`` and ``s3://`` paths work; TFRecord framing is Beam's own
``_TFRecordUtil`` (CRC-32C from google-crc32c), the one ``WriteToTFRecord`` uses.
"""
from __future__ import annotations

import dataclasses
import queue
import struct
import threading
import uuid
import zlib
from typing import Iterable, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

# zlib's Z_HUFFMAN_ONLY: entropy coding without the LZ77 match search. Float
# tensors (log-mels) have almost no repeated byte strings, so the search costs
# 3-5x the time for < 0.5 % smaller files (benchmarks/HISTORY.md, ingestion).
GZIP_HUFFMAN_ONLY = zlib.Z_HUFFMAN_ONLY
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, unknown OS
_FINAL_EMPTY_BLOCK = b"\x03\x00"  # a fixed-Huffman block holding only end-of-block, BFINAL set
_TAIL_BYTES = len(_FINAL_EMPTY_BLOCK) + 8  # final block + CRC-32 + ISIZE
_COPY_CHUNK = 4 << 20
_ZEROS = bytes(1 << 20)


@dataclasses.dataclass(frozen=True)
class Part:
    """One finished part file: where it is and what a join needs to know.

    Attributes:
        path: the part file.
        records: TFRecords in it.
        crc32: CRC-32 of its uncompressed bytes.
        size: uncompressed bytes.
        compressed_size: bytes of the file.
    """

    path: str
    records: int
    crc32: int
    size: int
    compressed_size: int


class PartWriter:
    """Writes serialized records to one GZIP TFRecord part file; :meth:`close` returns its :class:`Part`.

    Streams: memory stays at zlib's buffers plus a few queued records,
    whatever the record count. With ``background=True`` a thread compresses
    and writes while the caller goes on (zlib and file writes release the
    GIL): a Beam worker decodes the next track meanwhile, so writing costs
    almost no wall time when a core is free.
    """

    _QUEUED_CHUNKS = 32

    def __init__(self, path: str, compression_level: int = 6, compression_strategy: int = GZIP_HUFFMAN_ONLY,
                 background: bool = False):
        self.path = path
        self._handle = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
        self._deflate = zlib.compressobj(compression_level, zlib.DEFLATED, -zlib.MAX_WBITS, 8,
                                         compression_strategy)
        self._handle.write(_GZIP_HEADER)
        self._compressed = len(_GZIP_HEADER)
        self._crc, self._size, self.records = 0, 0, 0
        self._queue: queue.Queue | None = None
        self._failure: BaseException | None = None
        if background:
            self._queue = queue.Queue(self._QUEUED_CHUNKS)
            self._thread = threading.Thread(target=self._drain, name=f"PartWriter {path}", daemon=True)
            self._thread.start()

    def write(self, data: bytes) -> None:
        """Appends raw bytes (already TFRecord-framed); :meth:`write_record` is the usual entry."""
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        if self._queue is None:
            self._compress(data)
            return
        if self._failure is not None:
            raise RuntimeError(f"writing {self.path} failed") from self._failure
        self._queue.put(data)

    def write_record(self, record: bytes) -> None:
        """Appends one serialized record with its TFRecord length and CRC-32C framing."""
        _TFRecordUtil.write_record(self, record)
        self.records += 1

    def _compress(self, data: bytes) -> None:
        self._emit(self._deflate.compress(data))

    def _drain(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            if self._failure is None:
                try:
                    self._compress(data)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._failure = exc

    def _emit(self, chunk: bytes) -> None:
        if chunk:
            self._handle.write(chunk)
            self._compressed += len(chunk)

    def _stop_thread(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None

    def close(self) -> Part:
        self._stop_thread()
        if self._failure is not None:
            self._handle.close()
            raise RuntimeError(f"writing {self.path} failed") from self._failure
        self._emit(self._deflate.flush(zlib.Z_SYNC_FLUSH))
        self._emit(_FINAL_EMPTY_BLOCK + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        self._handle.close()
        return Part(self.path, self.records, self._crc, self._size, self._compressed)

    def abort(self) -> None:
        """Closes and deletes an unfinished part (a failed bundle leaves nothing behind)."""
        self._stop_thread()
        self._handle.close()
        delete_quietly([self.path])


def crc32_combine(crc_first: int, crc_second: int, size_second: int) -> int:
    """CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)``.

    CRC-32 is affine in (initial state, data): running ``len(B)`` zero bytes
    through from ``crc32(A)`` and from 0 differs exactly by how ``A``'s state
    carries through, which is what ``B``'s CRC lacks. zlib computes zeros at
    GB/s, so this costs ~1 ms per MB of ``B``.
    """
    shifted, reference = crc_first, 0
    remaining = size_second
    while remaining:
        chunk = _ZEROS if remaining >= len(_ZEROS) else _ZEROS[:remaining]
        shifted, reference = zlib.crc32(chunk, shifted), zlib.crc32(chunk, reference)
        remaining -= len(chunk)
    return shifted ^ reference ^ crc_second


def join_parts(parts: Sequence[Part], destination: str) -> int:
    """Makes ``destination`` one GZIP TFRecord file holding every part's records, in order.

    One part is renamed; several are joined into a temporary file beside
    ``destination`` (deflate bodies copied, not recompressed) that is then
    renamed, and the parts deleted; no part is an empty shard
    (:func:`write_empty`). Readers never see a partial file.

    Returns:
        The number of records in ``destination``.
    """
    if not parts:
        raise ValueError(f"no parts to join into {destination}")
    if len(parts) == 1:
        _make_parent(destination)
        FileSystems.rename([parts[0].path], [destination])
        return parts[0].records
    temporary = _temporary_beside(destination)
    crc, size = 0, 0
    try:
        with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as out:
            out.write(_GZIP_HEADER)
            for part in parts:
                _copy_deflate_body(part, out)
                crc, size = crc32_combine(crc, part.crc32, part.size), size + part.size
            out.write(_FINAL_EMPTY_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF))
        FileSystems.rename([temporary], [destination])
    except BaseException:
        delete_quietly([temporary])
        raise
    delete_quietly([part.path for part in parts])
    return sum(part.records for part in parts)


def _copy_deflate_body(part: Part, out) -> None:
    """Copies a part's deflate stream without its header, final block and trailer."""
    remaining = part.compressed_size - len(_GZIP_HEADER) - _TAIL_BYTES
    with FileSystems.open(part.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        if handle.read(len(_GZIP_HEADER)) != _GZIP_HEADER:
            raise ValueError(f"{part.path} is not a part written by PartWriter")
        while remaining > 0:
            chunk = handle.read(min(remaining, _COPY_CHUNK))
            if not chunk:
                raise ValueError(f"{part.path} is shorter than its recorded {part.compressed_size} bytes")
            out.write(chunk)
            remaining -= len(chunk)


def write_empty(destination: str) -> None:
    """Writes a GZIP TFRecord file with no records (through a temporary name)."""
    temporary = _temporary_beside(destination)
    PartWriter(temporary).close()
    FileSystems.rename([temporary], [destination])


def write_records(destination: str, records: Iterable[bytes],
                  compression_strategy: int = GZIP_HUFFMAN_ONLY) -> int:
    """Writes ``records`` as one GZIP TFRecord file through a temporary name; returns the count."""
    temporary = _temporary_beside(destination)
    writer = PartWriter(temporary, compression_strategy=compression_strategy)
    try:
        for record in records:
            writer.write_record(record)
        part = writer.close()
    except BaseException:
        writer.abort()
        raise
    return join_parts([part], destination)


def _make_parent(path: str) -> None:
    """Creates the folder of ``path`` for filesystems that have folders (a rename needs it)."""
    directory = path.rsplit("/", 1)[0]
    if not FileSystems.exists(directory):
        try:
            FileSystems.mkdirs(directory)
        except IOError:  # another worker made it first (BeamIOError is an IOError)
            if not FileSystems.exists(directory):
                raise


def _temporary_beside(path: str) -> str:
    directory, name = path.rsplit("/", 1)
    return f"{directory}/.tmp-{uuid.uuid4().hex}-{name}"


def delete_quietly(paths: Sequence[str]) -> None:
    """Deletes files or folders (recursively) that exist; missing ones are not an error."""
    existing = [path for path in paths if FileSystems.exists(path)]
    if existing:
        FileSystems.delete(existing)


__all__ = ["GZIP_HUFFMAN_ONLY", "Part", "PartWriter", "crc32_combine", "delete_quietly", "join_parts",
           "write_empty", "write_records"]
