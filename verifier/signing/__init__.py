"""Signed lineage reports that auditors verify offline against a pinned public key.

A report is attested as an in-toto Statement v1 whose subjects are the sha256 digests of every
weight file of both models and whose predicate is the report itself
(``predicateType`` ``https://lineage.dev/attestation/lineage-report/v1``), signed in a DSSE
envelope and stored as a Sigstore bundle v0.3. See docs/signing.md for the threat model and for
verifying with independent tools.

Typical use::

    key = generate_key()                                  # or load_private_key(path, passphrase)
    bundle = sign_report(report_path.read_bytes(), key)   # Sigstore bundle bytes
    result = verify_bundle(bundle, load_public_key(pub_path), models=(base_dir, candidate_dir))
"""

from __future__ import annotations

from verifier.signing.attestation import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    ModelCheck,
    Statement,
    VerifiedAttestation,
    bundle_path_for,
    check_model_files,
    sign_report,
    statement_for,
    statement_payload,
    subjects_for,
    verify_bundle,
    write_bundle,
)
from verifier.signing.bundle import BUNDLE_MEDIA_TYPE, parse_bundle
from verifier.signing.dsse import (
    INTOTO_PAYLOAD_TYPE,
    Envelope,
    pae,
    sign_envelope,
    verify_envelope,
)
from verifier.signing.keys import (
    KeyAlgorithm,
    KeyPair,
    PrivateKey,
    PublicKey,
    generate_key,
    is_encrypted,
    key_id,
    load_private_key,
    load_public_key,
    passphrase_from_env,
    private_key_pem,
    public_key_pem,
    write_key_pair,
)

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "INTOTO_PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Envelope",
    "KeyAlgorithm",
    "KeyPair",
    "ModelCheck",
    "PrivateKey",
    "PublicKey",
    "Statement",
    "VerifiedAttestation",
    "bundle_path_for",
    "check_model_files",
    "generate_key",
    "is_encrypted",
    "key_id",
    "load_private_key",
    "load_public_key",
    "pae",
    "parse_bundle",
    "passphrase_from_env",
    "private_key_pem",
    "public_key_pem",
    "sign_envelope",
    "sign_report",
    "statement_for",
    "statement_payload",
    "subjects_for",
    "verify_bundle",
    "verify_envelope",
    "write_bundle",
    "write_key_pair",
]
