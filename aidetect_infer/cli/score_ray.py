"""``python -m aidetect_infer score IN --out OUT --engine ray``: the ``score`` command on a Ray cluster.

Imported only when ``--engine ray`` is given (it imports Ray). The input is one file or a folder of files:
JSONL (``text`` and optional ``id``) or plain text, one text per line (read exactly as the local ``score``
reads them, ``.gz`` accepted, one read task per file), or CSV and Parquet (Ray's readers; ``--text-column``,
an ``id`` column when there is one). A fixed pool of actors scores them (:mod:`aidetect_infer.ray`), and the
driver writes what comes back, in input order, as the local ``score`` does: the same result and error records
(with ``file`` added for a folder), in JSONL or in Parquet.

Nothing lost, nothing doubled: Ray restarts a killed actor and scores its batch again, and rows reach the
driver once each. The job is idempotent rather than resumable: the output is written under a ``.partial``
name and renamed when the job completes, so an interrupted job leaves no output, and running it again starts
over and writes the same rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from aidetect_infer.errors import InvalidValueError, UsageError
from aidetect_infer.ray import ActorOptions, actor_options, id_text, map_detector
from aidetect_infer.streaming import CHUNK_CHARS, EXCERPT_CHARS, MISSING, read_chunks
from aidetect_infer.textio import is_jsonl, open_text

logger = logging.getLogger(__name__)

LINE_SUFFIXES = (".jsonl", ".ndjson", ".txt")
TABLE_SUFFIXES = (".csv", ".parquet")
ROWS_PER_BLOCK = 1024
# Reading and parsing are light next to scoring: their tasks reserve a quarter of a logical CPU, so an actor
# pool that reserves every CPU of the cluster does not starve its own input (Ray Data backpressure).
READ_CPUS = 0.25
PARQUET_SHARD_ROWS = 100_000
PARSED_SCHEMA = pa.schema(
    [("file", pa.string()), ("line", pa.int64()), ("text", pa.string()), ("id", pa.string()),
     ("error", pa.string()), ("excerpt", pa.string())]
)  # fmt: skip


def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(LINE_SUFFIXES) or "." not in name:
        return "lines"
    if name.endswith(TABLE_SUFFIXES) and not path.name.lower().endswith(".gz"):
        return name.rsplit(".", 1)[1]
    raise UsageError(f"{path}: --engine ray reads .jsonl, .ndjson, .txt (.gz accepted), .csv or .parquet")


def input_files(source: str) -> tuple[list[Path], str, Path | None]:
    """The files to read, their kind (``lines``, ``csv``, ``parquet``) and the folder they are in (or None).

    Raises:
        UsageError: A missing input, an empty folder, or a folder mixing kinds.
    """
    path = Path(source)
    if source == "-" or not path.exists():
        raise UsageError(f"{source}: cannot read input (no such file or folder)")
    if path.is_file():
        return [path], _kind(path), None
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    if not files:
        raise UsageError(f"{path}: the folder holds no input files")
    kinds = {_kind(p) for p in files}
    if len(kinds) > 1:
        raise UsageError(f"{path}: the folder mixes kinds of files ({', '.join(sorted(kinds))}); give one kind")
    return files, kinds.pop(), path


def _parsed_block(file: str, rows: list[tuple[int, str | None, str | None, str | None, str | None]]) -> pa.Table:
    lines, texts, ids, errors, excerpts = zip(*rows, strict=True) if rows else ((),) * 5
    return pa.Table.from_pydict(
        {"file": [file] * len(rows), "line": list(lines), "text": list(texts), "id": list(ids),
         "error": list(errors), "excerpt": list(excerpts)},
        schema=PARSED_SCHEMA,
    )  # fmt: skip


def read_line_file(path: str, name: str) -> Iterator[pa.Table]:
    """The lines of one JSONL or text file as parsed rows (blank lines left out), numbered from 1."""
    with open_text(path) as stream:
        for chunk in read_chunks(stream, first=1, jsonl=is_jsonl(path), texts=ROWS_PER_BLOCK, chars=CHUNK_CHARS):
            rows: list[tuple[int, str | None, str | None, str | None, str | None]] = [
                (n, t, None if i is MISSING else id_text(i), None, None)
                for n, i, t in zip(chunk.lines, chunk.ids, chunk.texts, strict=True)
            ]
            rows += [(n, None, None, e, x) for n, e, x in chunk.errors]
            rows.sort(key=lambda row: row[0])
            yield _parsed_block(name, rows)


class LineFilesDatasource(Datasource):
    """JSONL or text files, one read task per file, read as the local ``score`` reads them."""

    def __init__(self, files: list[Path], names: list[str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.files, self.names = [str(f) for f in files], names

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(os.path.getsize(f) for f in self.files)

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        return [
            ReadTask(
                _reader(path, name),
                BlockMetadata(num_rows=None, size_bytes=os.path.getsize(path), exec_stats=None, input_files=(path,)),
                schema=PARSED_SCHEMA,
            )
            for path, name in zip(self.files, self.names, strict=True)
        ]


def _reader(path: str, name: str) -> Callable[[], Iterator[pa.Table]]:
    return lambda: read_line_file(path, name)


def _table_rows(text_column: str, id_column: str | None) -> Callable[[dict[str, np.ndarray]], dict[str, list[Any]]]:
    """A batch function turning CSV/Parquet rows into parsed rows (``line`` numbered later, by the driver)."""

    def parse(batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        if text_column not in batch:
            raise InvalidValueError(f"the input has no column {text_column!r} (columns: {', '.join(batch)})")
        texts, ids, errors, excerpts = [], [], [], []
        values = batch[id_column].tolist() if id_column and id_column in batch else [None] * len(batch[text_column])
        for text, value in zip(batch[text_column].tolist(), values, strict=True):
            ok = isinstance(text, str)
            texts.append(text if ok else None)
            errors.append(None if ok else f'expected a string in column "{text_column}", got {text!r}'[:200])
            excerpts.append(None if ok else repr(text)[:EXCERPT_CHARS])
            ids.append(None if value is None else id_text(value.item() if isinstance(value, np.generic) else value))
        files = [Path(p).name for p in batch["path"].tolist()] if "path" in batch else [""] * len(texts)
        return {"file": files, "line": [0] * len(texts), "text": texts, "id": ids, "error": errors,
                "excerpt": excerpts}  # fmt: skip

    return parse


def read_inputs(files: list[Path], kind: str, folder: Path | None, args: argparse.Namespace) -> ray.data.Dataset:
    """The parsed rows of every input file, in file order."""
    names = [str(f.relative_to(folder)) if folder else "" for f in files]
    if kind == "lines":
        lines: ray.data.Dataset = ray.data.read_datasource(LineFilesDatasource(files, names), num_cpus=READ_CPUS)
        return lines
    reader = ray.data.read_csv if kind == "csv" else ray.data.read_parquet
    ds: ray.data.Dataset = reader([str(f) for f in files], include_paths=folder is not None, num_cpus=READ_CPUS)
    return ds.map_batches(_table_rows(args.text_column, args.id_column), batch_format="numpy", num_cpus=READ_CPUS)


@dataclass
class Counts:
    """What the job wrote."""

    scored: int = 0
    errors: int = 0


class ResultWriter:
    """Writes result and error records under ``.partial`` names; :meth:`commit` renames them into place.

    ``OUT.jsonl`` gets the local ``score``'s JSONL records; ``OUT.parquet`` one Parquet file; any other
    ``OUT`` a folder of Parquet shards ``part-00000.parquet`` of 100,000 rows. Errors go to JSONL.
    """

    def __init__(self, out: Path, errors: Path) -> None:
        self.out, self.errors = out, errors
        self.format = "jsonl" if out.suffix == ".jsonl" else "parquet"
        self.sharded = self.format == "parquet" and out.suffix != ".parquet"
        self.partial_out = out.with_name(out.name + ".partial")
        self.partial_errors = errors.with_name(errors.name + ".partial")
        for stale in (self.partial_out, self.partial_errors):  # left by an interrupted run: start over
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        self._jsonl: IO[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._shard_rows = 0
        self._shards = 0
        if self.format == "jsonl":
            self._jsonl = open(self.partial_out, "wb")  # noqa: SIM115 - closed in commit()
        elif self.sharded:
            self.partial_out.mkdir(parents=True)

    def results(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        if self._jsonl is not None:
            self._jsonl.write("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records).encode("ascii"))
            return
        for start in range(0, len(records), PARQUET_SHARD_ROWS):
            part = records[start : start + PARQUET_SHARD_ROWS]
            table = pa.Table.from_pylist([_flat_id(r) for r in part], schema=_result_schema(part[0]))
            if self.sharded and self._shard_rows + len(part) > PARQUET_SHARD_ROWS and self._parquet is not None:
                self._parquet.close()
                self._parquet, self._shard_rows = None, 0
            if self._parquet is None:
                target = self.partial_out / f"part-{self._shards:05d}.parquet" if self.sharded else self.partial_out
                self._parquet, self._shards = pq.ParquetWriter(target, table.schema), self._shards + 1
            self._parquet.write_table(table)
            self._shard_rows += len(part)

    def error_records(self, records: list[dict[str, Any]]) -> None:
        if records:
            self._errors = self._errors or open(self.partial_errors, "wb")  # noqa: SIM115 - closed in commit()
            self._errors.write("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records).encode("ascii"))

    def close(self) -> None:
        for f in (self._jsonl, self._errors, self._parquet):
            if f is not None:
                f.close()
        self._jsonl = self._errors = self._parquet = None

    def commit(self) -> None:
        """Close the files and move them to their final names (an existing output is replaced)."""
        self.close()
        if self.format == "parquet" and not self.sharded and not self.partial_out.exists():
            pq.write_table(pa.Table.from_pylist([], schema=_result_schema({})), self.partial_out)
        if self.out.is_dir():
            shutil.rmtree(self.out)
        os.replace(self.partial_out, self.out)
        if self.partial_errors.exists():
            os.replace(self.partial_errors, self.errors)
        else:
            self.errors.unlink(missing_ok=True)


def _flat_id(record: dict[str, Any]) -> dict[str, Any]:
    """A record for Parquet: ``id`` as a string (a string id as it is, any other JSON value as its JSON text)."""
    if "id" in record and not isinstance(record["id"], str):
        return {**record, "id": json.dumps(record["id"], sort_keys=True)}
    return record


def _result_schema(example: dict[str, Any]) -> pa.Schema:
    fields = [("file", pa.string())] if "file" in example else []
    fields += [("line", pa.int64()), ("id", pa.string()), ("label", pa.string()), ("score", pa.float64()),
               ("windows", pa.int64()), ("tokens", pa.int64())]  # fmt: skip
    return pa.schema(fields)


def records(
    batches: Iterable[dict[str, np.ndarray]], *, with_file: bool, number_rows: bool
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The result and error records of each scored batch, in the local ``score``'s format."""
    row_of: dict[str, int] = {}
    for batch in batches:
        results, errors = [], []
        for k in range(len(batch["line"])):
            file = str(batch["file"][k])
            line = int(batch["line"][k])
            if number_rows:  # CSV and Parquet rows are numbered here, in input order, per file
                line = row_of[file] = row_of.get(file, 0) + 1
            where: dict[str, Any] = {"file": file} if with_file else {}
            if batch["label"][k] is None:
                errors.append({**where, "line": line, "error": batch["error"][k], "excerpt": batch["excerpt"][k]})
                continue
            record: dict[str, Any] = {**where, "line": line}
            if batch["id"][k] is not None:
                record["id"] = json.loads(batch["id"][k])
            record.update(label=str(batch["label"][k]), score=round(float(batch["score"][k]), 6),
                          windows=int(batch["windows"][k]), tokens=int(batch["tokens"][k]))  # fmt: skip
            results.append(record)
        yield results, errors


def run_on_ray(args: argparse.Namespace, output: Path, errors: Path, detector_options: dict[str, Any]) -> Counts:
    """Score ``args.input`` on the cluster at ``args.address`` into ``output`` and ``errors``."""
    files, kind, folder = input_files(args.input)
    threads = detector_options.pop("threads", None) or 1
    detector_options["detector_batch_size"] = detector_options.pop("batch_size", None)
    options: ActorOptions = actor_options("text", "parsed", threads, 0, detector_options)
    # Without --address a cluster is started in this process, with a logical CPU for every actor thread and
    # one for reading.
    cpus = None if args.address else max(os.cpu_count() or 1, args.actors * threads + 1)
    ray.init(address=args.address, num_cpus=cpus, logging_level=logging.WARNING, log_to_driver=args.verbose)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the output keeps the input's order
        context.enable_progress_bars = args.verbose
        if not args.verbose:  # Ray Data logs each execution at INFO
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = read_inputs(files, kind, folder, args)
        scored = map_detector(ds, model=args.model, options=options, batch_size=args.chunk,
                              num_actors=args.actors, threads_per_actor=threads)  # fmt: skip
        writer = ResultWriter(output, errors)
        counts = Counts()
        try:
            batches = scored.iter_batches(batch_size=None, batch_format="numpy")
            for results, failed in records(batches, with_file=folder is not None, number_rows=kind != "lines"):
                writer.results(results)
                writer.error_records(failed)
                counts.scored += len(results)
                counts.errors += len(failed)
        except BaseException:
            writer.close()
            raise
        writer.commit()
        return counts
    finally:
        ray.shutdown()
