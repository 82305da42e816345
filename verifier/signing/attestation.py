"""Signed lineage reports: an in-toto Statement v1 in a DSSE envelope in a Sigstore bundle.

Statement (in-toto attestation framework, ``spec/v1/statement.md``)::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "base/<path>", "digest": {"sha256": "<hex>"}}, ...,
                 {"name": "candidate/<path>", "digest": {"sha256": "<hex>"}}, ...],
     "predicateType": "https://lineage.dev/attestation/lineage-report/v1",
     "predicate": <the report JSON, key for key>}

Subjects are taken from the report's own ``models.*.files`` and ``models.*.side_files``
records: the report already holds the sha256 of every weight file it read, and of the config
and tokenizer files read beside them (schema 1.3 on), so signing never re-reads the models, and
a report written with ``--no-hash`` (empty digests) cannot be signed.
The payload is the statement as compact UTF-8 JSON; the signature covers exactly those bytes
(through DSSE's PAE) and verification parses only bytes that verified.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from verifier.errors import InputError, IntegrityError, LineageError
from verifier.files import FileRecord, Hashing, write_atomic
from verifier.report import Report
from verifier.signing.bundle import bundle_json, parse_bundle
from verifier.signing.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope, verify_envelope
from verifier.signing.keys import PrivateKey, PublicKey, key_id, load_public_key

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: predicateType of a lineage report attestation; the predicate is the report JSON itself
PREDICATE_TYPE = "https://lineage.dev/attestation/lineage-report/v1"
#: prefixes of subject names, one per model of the report
SIDES = ("base", "candidate")


class ResourceDescriptor(BaseModel):
    """in-toto ResourceDescriptor (``spec/v1/resource_descriptor.md``); lineage writes only
    ``name`` and ``digest``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = ""
    uri: str | None = None
    digest: dict[str, str] = Field(default_factory=dict)
    content: str | None = None
    download_location: str | None = Field(None, alias="downloadLocation")
    media_type: str | None = Field(None, alias="mediaType")
    annotations: dict[str, Any] | None = None


class Statement(BaseModel):
    """in-toto Statement v1 (``spec/v1/statement.md``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: str = Field(alias="_type")
    subject: list[ResourceDescriptor]
    predicate_type: str = Field(alias="predicateType")
    predicate: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelCheck:
    """One model folder whose weight files matched the report.

    ``unread`` lists files beside them with a weights suffix that lineage does not read from
    that path (a ``.bin`` next to safetensors, a shard no index names): they are outside the
    signed file set, so the signature says nothing about them.
    """

    path: Path
    files: tuple[str, ...]
    unread: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifiedAttestation:
    """What ``verify_bundle`` established: who signed (``key_id``), which report, which files.

    ``models`` holds the checks of the two folders whose files were rehashed and matched, or
    ``None`` when no model files were checked (the subjects then only match the report's own
    file lists).
    """

    key_id: str
    payload_type: str
    predicate_type: str
    statement: Statement
    report: Report
    payload: bytes
    models: tuple[ModelCheck, ModelCheck] | None = None


def _records(report: Report) -> dict[str, list[FileRecord]]:
    """Per side, every file the report says was read: the weights and the side files (config,
    tokenizer)."""
    return {"base": [*report.models.base.files, *report.models.base.side_files],
            "candidate": [*report.models.candidate.files, *report.models.candidate.side_files]}


def subjects_for(report: Report) -> list[dict[str, Any]]:
    """One subject per file of both models, ``base/`` files first, each side sorted by path."""
    subjects = []
    for side, records in _records(report).items():
        missing = [r.path for r in records if not r.sha256]
        if missing:
            raise InputError(
                f"the report has no sha256 for {side} file {missing[0]} (written with --no-hash?)",
                hint="re-run verify without --no-hash (or with --sign-key) to sign its report",
            )
        for record in sorted(records, key=lambda r: r.path):
            subjects.append({"name": f"{side}/{record.path}", "digest": {"sha256": record.sha256}})
    names = Counter(s["name"] for s in subjects)
    dup = [n for n, c in names.items() if c > 1]
    if dup:
        raise InputError(f"the report names file {dup[0]} twice")
    return subjects


def _parse_report(report_json: bytes | str) -> tuple[Report, dict[str, Any]]:
    try:
        report = Report.from_json(report_json)
        data = json.loads(report_json)
    except ValidationError as exc:
        raise InputError(f"not a lineage report ({_first_error(exc)})") from exc
    except ValueError as exc:
        raise InputError(f"not a lineage report: {str(exc).splitlines()[0]}") from exc
    return report, data


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "top level"
    more = len(exc.errors()) - 1
    return f"{where}: {err['msg']}" + (f"; {more} more" if more else "")


def statement_for(report: Report | bytes | str) -> dict[str, Any]:
    """The in-toto Statement v1 for a report (an object, or the JSON exactly as stored).

    From JSON, the predicate is that JSON parsed as is (same keys, same values); from a
    ``Report``, it is ``report.to_json()`` parsed.
    """
    if isinstance(report, Report):
        parsed, predicate = report, json.loads(report.to_json())
    else:
        parsed, predicate = _parse_report(report)
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects_for(parsed),
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def statement_payload(statement: dict[str, Any]) -> bytes:
    """The DSSE payload: the statement as compact UTF-8 JSON."""
    return json.dumps(statement, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_report(report: Report | bytes | str, key: PrivateKey) -> bytes:
    """The Sigstore bundle v0.3 (file bytes) attesting ``report`` with ``key``."""
    envelope = sign_envelope(statement_payload(statement_for(report)), INTOTO_PAYLOAD_TYPE, key)
    return bundle_json(envelope, key_id(key))


def bundle_path_for(report_path: Path) -> Path:
    """Where the bundle of a report goes: ``report.json`` -> ``report.sigstore.json``."""
    name = report_path.name
    stem = name[: -len(".json")] if name.endswith(".json") else name
    return report_path.with_name(f"{stem}.sigstore.json")


def write_bundle(path: Path, bundle: bytes) -> None:
    """Write a bundle atomically (temporary sibling, then rename)."""
    try:
        write_atomic(path, bundle)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the bundle: {exc.strerror or exc}") from exc


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        # parsers disagree on which duplicate wins; a signed document must mean one thing
        raise IntegrityError(f"the signed payload repeats the key {dup!r}")
    return dict(pairs)


def _parse_statement(payload: bytes) -> Statement:
    try:
        data = json.loads(payload, object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IntegrityError("the signed payload is not JSON") from exc
    if not isinstance(data, dict):
        raise IntegrityError("the signed payload is not a JSON object")
    if data.get("_type") != STATEMENT_TYPE:
        raise IntegrityError(f"the signed payload is not an in-toto Statement v1 "
                             f"(_type {data.get('_type')!r}, expected {STATEMENT_TYPE})")
    if data.get("predicateType") != PREDICATE_TYPE:
        raise IntegrityError(f"predicateType is {data.get('predicateType')!r}, expected "
                             f"{PREDICATE_TYPE}")
    try:
        return Statement.model_validate(data)
    except ValidationError as exc:
        raise IntegrityError(f"malformed in-toto statement ({_first_error(exc)})") from exc


def _check_subjects(statement: Statement, report: Report) -> None:
    """Subjects must be exactly the report's files: same names, same sha256, no duplicates."""
    try:
        expected = {s["name"]: s["digest"]["sha256"] for s in subjects_for(report)}
    except InputError as exc:
        raise IntegrityError(f"the attested report cannot be checked: {exc.message}") from exc
    got: dict[str, str] = {}
    for subject in statement.subject:
        digest = subject.digest.get("sha256", "")
        if not subject.name or not digest:
            raise IntegrityError(f"subject {subject.name or '(unnamed)'} has no name or sha256")
        if subject.name in got:
            raise IntegrityError(f"subject {subject.name} appears twice")
        got[subject.name] = digest.lower()
    unnamed = sorted(expected.keys() - got.keys())
    if unnamed:
        raise IntegrityError(f"the report names file {unnamed[0]} but no subject does")
    strangers = sorted(got.keys() - expected.keys())
    if strangers:
        raise IntegrityError(f"subject {strangers[0]} is not a file of the report")
    differ = [n for n in sorted(expected) if expected[n].lower() != got[n]]
    if differ:
        name = differ[0]
        raise IntegrityError(f"subject {name} has sha256 {got[name]}, the report says "
                             f"{expected[name]}")


def _safe_relative(side: str, rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\\" in rel:
        raise IntegrityError(f"the report names {side} file {rel!r} outside the model folder")
    return path


def _files_read(folder: Path, side_files: bool) -> set[str]:
    """Relative POSIX paths of the weight files lineage reads from ``folder``, and with
    ``side_files`` of the config and tokenizer files it reads beside them."""
    from verifier.model import side_files_read
    from verifier.readers import open_checkpoint

    with open_checkpoint(folder) as reader:
        side = side_files_read(reader) if side_files else []
        return {reader.relative(f) for f in [*reader.files, *side]}


def _weight_suffixes() -> tuple[str, ...]:
    from verifier.readers import FORMATS

    return tuple(s for fmt in FORMATS for s in fmt.suffixes)


def check_model_files(
    side: str, folder: str | Path, records: Iterable[FileRecord], *, side_files: bool = True
) -> ModelCheck:
    """Rehash the files of one model and require the exact file set of the report.

    "Exact file set": the files the report names (relative to the model root: the folder, or
    the parent of a single weights file) must be the very set of files lineage reads from that
    path: the weight files (``reader.files`` of ``open_checkpoint``) and, with ``side_files``
    (reports of schema 1.3 on), the config and tokenizer files beside them
    (``verifier.model.side_files_read``), each with the sha256 and size the report records.
    Files lineage does not read (READMEs, shard indexes) are not part of the set; other
    weight-suffixed files in the model root are listed in ``ModelCheck.unread``. Raises
    ``IntegrityError`` on any difference and ``InputError`` when the path does not exist at
    all.
    """
    from verifier.readers import resolve_path

    path = resolve_path(str(folder))
    root = path.parent if path.is_file() else path
    wanted = {}
    for record in records:
        wanted[_safe_relative(side, record.path).as_posix()] = record
    for rel, record in sorted(wanted.items()):
        file = root / rel
        if not file.is_file():
            raise IntegrityError(f"{side}/{rel}: missing from {root} (the report names it)")
        size = file.stat().st_size
        if size != record.size:
            raise IntegrityError(f"{side}/{rel}: size {size} bytes, the report says {record.size}")
    with Hashing() as hashing:  # files side by side: sha256 is ~2 GB/s per core
        hashing.submit(root / rel for rel in sorted(wanted))
        digests = hashing.wait()
    for rel, record in sorted(wanted.items()):
        digest = digests[root / rel]
        if digest != record.sha256.lower():
            raise IntegrityError(f"{side}/{rel}: sha256 {digest} does not match the signed "
                                 f"{record.sha256}")
    try:
        present = _files_read(path, side_files)
    except LineageError as exc:
        raise IntegrityError(f"{side} model {path}: does not open as the model the report "
                             f"describes ({exc.message})") from exc
    extra = sorted(present - wanted.keys())
    if extra:
        raise IntegrityError(f"{side}/{extra[0]}: a file lineage reads that the report does "
                             f"not name ({len(extra)} such file{'s' if len(extra) > 1 else ''} "
                             f"in {root})")
    unread = sorted(wanted.keys() - present)
    if unread:
        raise IntegrityError(f"{side}/{unread[0]}: named by the report but lineage would not "
                             f"read it from {path}")
    others: tuple[str, ...] = ()
    if path.is_dir():
        others = tuple(sorted(
            p.name for p in root.iterdir()
            if p.is_file() and p.name.lower().endswith(_weight_suffixes())
            and p.name not in present
        ))
    return ModelCheck(path=path, files=tuple(sorted(present)), unread=others)


def verify_bundle(
    bundle: bytes,
    public_key: PublicKey | Path | bytes,
    models: tuple[str | Path, str | Path] | None = None,
) -> VerifiedAttestation:
    """Verify a lineage bundle against a pinned public key, optionally against model files.

    Steps, each failure an ``IntegrityError`` with a one-line reason: parse the bundle (or bare
    DSSE envelope); verify a signature over ``PAE(payloadType, payload)`` with the pinned key;
    require ``payloadType`` ``application/vnd.in-toto+json``; parse only the verified payload as
    an in-toto Statement v1 with ``predicateType`` ``PREDICATE_TYPE``; validate the predicate as
    a lineage report; require the subjects to equal the report's file lists. With ``models``
    (base folder, candidate folder), rehash both and require the exact file set.
    """
    pinned = public_key if not isinstance(public_key, Path | bytes) else load_public_key(
        public_key
    )
    envelope, _hint = parse_bundle(bundle)
    payload = verify_envelope(envelope, pinned)
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        raise IntegrityError(f"payloadType is {envelope.payload_type!r}, expected "
                             f"{INTOTO_PAYLOAD_TYPE}")
    statement = _parse_statement(payload)
    try:
        report = Report.model_validate(statement.predicate)
    except ValidationError as exc:
        raise IntegrityError(f"the predicate is not a lineage report ({_first_error(exc)})"
                             ) from exc
    _check_subjects(statement, report)
    checked = None
    if models is not None:
        records = _records(report)
        # a report older than 1.3 listed no side files: they were not signed, not required
        listed = report.lists_side_files()
        checked = (check_model_files("base", models[0], records["base"], side_files=listed),
                   check_model_files("candidate", models[1], records["candidate"],
                                     side_files=listed))
    return VerifiedAttestation(
        key_id=key_id(pinned), payload_type=envelope.payload_type,
        predicate_type=statement.predicate_type, statement=statement, report=report,
        payload=payload, models=checked,
    )
