"""DSSE, the Dead Simple Signing Envelope (https://github.com/secure-systems-lab/dsse, v1.0).

A signature covers the Pre-Authentication Encoding of the payload type and the payload bytes::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where ``LEN`` is the length in bytes as ASCII decimal without leading zeros and ``SP`` is one
space (envelope.md and protocol.md of the spec). The envelope carries the payload base64-encoded;
a verifier decodes it, verifies the signature over ``PAE`` of those exact bytes, and only then
parses them: nothing is re-serialised between signing and verifying.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field

from verifier.errors import IntegrityError
from verifier.signing.keys import PrivateKey, PublicKey, key_id, sign_bytes, verify_bytes

#: payloadType of an in-toto Statement (in-toto attestation framework, envelope.md)
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


class DsseSignature(BaseModel):
    """One signature: ``sig`` base64, ``keyid`` an unauthenticated hint (may be empty)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sig: str
    keyid: str = ""


class Envelope(BaseModel):
    """A DSSE envelope in its JSON form (``payload`` base64, ``payloadType``, ``signatures``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    payload: str
    payload_type: str = Field(alias="payloadType")
    signatures: list[DsseSignature]

    def to_dict(self) -> dict[str, object]:
        """The JSON object of the spec (camelCase ``payloadType``)."""
        return self.model_dump(by_alias=True)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding of ``payload_type`` (UTF-8) and ``payload``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def b64decode(text: str, what: str) -> bytes:
    """Strict base64: the standard alphabet, or the URL-safe one (DSSE accepts either).

    Missing padding is tolerated; any other character is an ``IntegrityError``.
    """
    data = text.strip().encode("ascii", errors="replace")
    data += b"=" * (-len(data) % 4)
    altchars = b"-_" if (b"-" in data or b"_" in data) else None
    try:
        return base64.b64decode(data, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IntegrityError(f"the envelope's {what} is not valid base64") from exc


def sign_envelope(payload: bytes, payload_type: str, key: PrivateKey) -> Envelope:
    """An envelope holding ``payload`` with one signature by ``key`` over ``PAE``."""
    signature = sign_bytes(key, pae(payload_type, payload))
    return Envelope(
        payload=base64.b64encode(payload).decode("ascii"),
        payloadType=payload_type,
        signatures=[DsseSignature(sig=base64.b64encode(signature).decode("ascii"),
                                  keyid=key_id(key))],
    )


def verify_envelope(envelope: Envelope, public_key: PublicKey) -> bytes:
    """The payload bytes, once a signature over their ``PAE`` verifies with ``public_key``.

    Keyids are hints only (DSSE protocol): every signature is tried against the pinned key, and
    one that verifies suffices. Raises ``IntegrityError`` when none does.
    """
    if not envelope.signatures:
        raise IntegrityError("the envelope holds no signature")
    payload = b64decode(envelope.payload, "payload")
    message = pae(envelope.payload_type, payload)
    for signature in envelope.signatures:
        raw = b64decode(signature.sig, "signature")
        if verify_bytes(public_key, raw, message):
            return payload
    pinned = key_id(public_key)
    named = sorted({s.keyid for s in envelope.signatures if s.keyid})
    if named and pinned not in named:
        raise IntegrityError(
            f"signature does not verify: the envelope is signed by key {', '.join(named)}, "
            f"not by the pinned key {pinned}"
        )
    raise IntegrityError(
        f"signature does not verify with the pinned key {pinned}: the payload, its type or the "
        "signature was altered"
    )
