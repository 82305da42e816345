"""Sigstore bundle v0.3 (``application/vnd.dev.sigstore.bundle.v0.3+json``) around a DSSE envelope.

The bundle is the protobuf-specs ``dev.sigstore.bundle.v1.Bundle`` message in its canonical JSON
form (https://github.com/sigstore/protobuf-specs, ``protos/sigstore_bundle.proto``):
``verificationMaterial.publicKey.hint`` names the signing key (here its key id),
``tlogEntries`` is empty (lineage signs offline and uploads nothing to a transparency log), and
``dsseEnvelope`` is the DSSE envelope. The hint is not trusted: verification always uses the
key the verifier pins. A bare DSSE envelope (the JSON object alone) is accepted as well, since
that is what DSSE tools such as securesystemslib produce.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from verifier.errors import IntegrityError
from verifier.signing.dsse import Envelope

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PublicKeyIdentifier(_Frozen):
    hint: str = ""


class VerificationMaterial(_Frozen):
    """Key-based verification material; transparency-log and timestamp data are carried but
    not used (trust comes from the pinned key)."""

    public_key: PublicKeyIdentifier = Field(alias="publicKey")
    tlog_entries: list[dict[str, Any]] = Field(default_factory=list, alias="tlogEntries")
    timestamp_verification_data: dict[str, Any] | None = Field(
        None, alias="timestampVerificationData"
    )


class Bundle(_Frozen):
    media_type: Literal["application/vnd.dev.sigstore.bundle.v0.3+json"] = Field(
        alias="mediaType"
    )
    verification_material: VerificationMaterial = Field(alias="verificationMaterial")
    dsse_envelope: Envelope = Field(alias="dsseEnvelope")


def bundle_json(envelope: Envelope, key_hint: str) -> bytes:
    """The bundle file's bytes: indented JSON and a trailing newline."""
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint}, "tlogEntries": []},
        "dsseEnvelope": envelope.to_dict(),
    }
    return (json.dumps(bundle, indent=2) + "\n").encode("utf-8")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "top level"
    return f"{where}: {err['msg']}"


def parse_bundle(data: bytes) -> tuple[Envelope, str | None]:
    """The DSSE envelope of a Sigstore bundle v0.3 (or of a bare envelope) and the key hint.

    Anything that is not such a JSON document (truncated, another format, unknown keys) is an
    ``IntegrityError``.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IntegrityError("the bundle is not valid JSON (truncated or not a bundle?)") from exc
    if not isinstance(doc, dict):
        raise IntegrityError("the bundle is not a JSON object")
    try:
        if "mediaType" in doc:
            if doc["mediaType"] != BUNDLE_MEDIA_TYPE:
                raise IntegrityError(f"unsupported bundle mediaType {doc['mediaType']!r}; "
                                     f"expected {BUNDLE_MEDIA_TYPE}")
            bundle = Bundle.model_validate(doc)
            return bundle.dsse_envelope, bundle.verification_material.public_key.hint or None
        if "payloadType" in doc:
            return Envelope.model_validate(doc), None
    except ValidationError as exc:
        raise IntegrityError(f"malformed bundle ({_first_error(exc)})") from exc
    raise IntegrityError("not a Sigstore bundle or DSSE envelope (no mediaType or payloadType)")
