"""Signing keys: generation, PEM files, key ids, and raw signatures (all through ``cryptography``).

Two algorithms are supported, both accepted by DSSE verifiers such as cosign and
securesystemslib:

* ``ecdsa-p256`` (default): ECDSA on NIST P-256; a signature is the DER-encoded ``(r, s)`` over
  SHA-256 of the message, the form the DSSE protocol and Sigstore use for ECDSA keys.
* ``ed25519``: Ed25519 (RFC 8032) over the message itself.

Private keys are PKCS#8 PEM, optionally encrypted with a passphrase (the ``cryptography``
library's best available encryption); public keys are SubjectPublicKeyInfo PEM, the form
``cosign --key`` reads. A key id is the lowercase hex SHA-256 of the DER SubjectPublicKeyInfo, so
anyone holding the public key can recompute it. No function here prints or logs key material.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from verifier.errors import InputError, IntegrityError, UsageError
from verifier.files import write_atomic

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class KeyAlgorithm(str, Enum):
    """The signature algorithms lineage generates and verifies."""

    ecdsa_p256 = "ecdsa-p256"
    ed25519 = "ed25519"


@dataclass(frozen=True)
class KeyPair:
    """Where ``write_key_pair`` put the two PEM files, and the key id of the pair."""

    private: Path
    public: Path
    key_id: str
    algorithm: KeyAlgorithm
    encrypted: bool


def generate_key(algorithm: KeyAlgorithm | str = KeyAlgorithm.ecdsa_p256) -> PrivateKey:
    """A fresh private key: ECDSA P-256 (default) or Ed25519."""
    algo = KeyAlgorithm(algorithm)
    if algo is KeyAlgorithm.ed25519:
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def algorithm_of(key: PrivateKey | PublicKey) -> KeyAlgorithm:
    """Which supported algorithm a key is for (its curve, for ECDSA)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyAlgorithm.ed25519
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return KeyAlgorithm.ecdsa_p256
    raise InputError(f"unsupported key type {type(key).__name__} (lineage signs with ECDSA "
                     "P-256 or Ed25519)")


def public_key_of(key: PrivateKey | PublicKey) -> PublicKey:
    """The public half of ``key`` (``key`` itself when it is already public)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        return key.public_key()
    return key


def public_key_der(key: PrivateKey | PublicKey) -> bytes:
    """The DER-encoded SubjectPublicKeyInfo (RFC 5280) of ``key``."""
    return public_key_of(key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: PrivateKey | PublicKey) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo: the same for both halves."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def public_key_pem(key: PrivateKey | PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``)."""
    return public_key_of(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""
    if passphrase is not None and not passphrase:
        raise UsageError("the passphrase is empty; give a non-empty one or none")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def key_file_names(name: str) -> tuple[str, str]:
    """File names of a key pair called ``name``: ``NAME.key.pem`` and ``NAME.pub.pem``."""
    return f"{name}.key.pem", f"{name}.pub.pem"


def write_key_pair(
    folder: Path,
    key: PrivateKey,
    *,
    passphrase: bytes | None = None,
    name: str = "lineage",
    overwrite: bool = False,
) -> KeyPair:
    """Write ``NAME.key.pem`` (mode 0600) and ``NAME.pub.pem`` (0644) into ``folder``.

    Both are written atomically; existing files are refused unless ``overwrite``.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(f"invalid key name {name!r}: use a plain file-name stem")
    private_name, public_name = key_file_names(name)
    private_path, public_path = folder / private_name, folder / public_name
    try:
        for path in (private_path, public_path):
            # both checked before either is written: a pair half replaced is a key lost
            if path.exists() and not overwrite:
                raise UsageError(f"{path}: already exists; refusing to overwrite a key",
                                 hint="choose another --out or --name, or pass --force")
            if path.is_dir() or (path.exists() and not path.is_file()):
                raise UsageError(f"{path}: is not a regular file; a key cannot be written there")
    except OSError as exc:  # a name too long, a folder that cannot be searched
        raise InputError(f"{folder}: cannot write the key pair: {exc.strerror or exc}") from exc
    # write_atomic gives its temporary file the mode before writing a byte, so the private key
    # is never readable by others, not even briefly
    try:
        write_atomic(private_path, private_key_pem(key, passphrase), mode=0o600)
        write_atomic(public_path, public_key_pem(key), mode=0o644)
    except OSError as exc:
        raise InputError(f"{folder}: cannot write the key pair: {exc.strerror or exc}") from exc
    return KeyPair(private=private_path, public=public_path, key_id=key_id(key),
                   algorithm=algorithm_of(key), encrypted=bool(passphrase))


def _read(source: Path | bytes, what: str) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, what
    try:
        return source.read_bytes(), str(source)
    except OSError as exc:
        raise InputError(f"{source}: cannot read {what}: {exc.strerror or exc}") from exc


def is_encrypted(pem: bytes) -> bool:
    """Whether a private key PEM is passphrase-protected (PKCS#8 or legacy OpenSSL form)."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or b"Proc-Type: 4,ENCRYPTED" in pem


def load_private_key(source: Path | bytes, passphrase: bytes | None = None, *,
                     name: str | None = None) -> PrivateKey:
    """A private key from a PEM file (or its bytes, read from the file ``name`` says, for the
    errors).

    An encrypted key without a passphrase, or with a wrong one, is a ``UsageError`` (exit 2):
    the file is fine, the secret supplied with it is not. A passphrase given for an unencrypted
    key is ignored. Anything that is not a P-256 or Ed25519 private key is an ``InputError``.
    """
    pem, label = _read(source, "private key")
    label = name or label
    encrypted = is_encrypted(pem)
    if encrypted and not passphrase:
        raise UsageError(f"{label}: the private key is encrypted and no passphrase was given",
                         hint="pass --passphrase-env VAR naming a variable that holds it")
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise UsageError(f"{label}: wrong passphrase for the encrypted private key") from exc
        raise InputError(f"{label}: not a PEM private key") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{label}: not a usable PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise InputError(f"{label}: a {type(key).__name__}; lineage signs with ECDSA P-256 or "
                         "Ed25519 keys")
    algorithm_of(key)  # refuses curves other than P-256
    return key


def load_public_key(source: Path | bytes) -> PublicKey:
    """The pinned public key (SubjectPublicKeyInfo PEM) a verifier trusts.

    An unreadable file is an ``InputError`` (exit 4); a private key passed by mistake is a
    ``UsageError`` (exit 2); bytes that do not decode to a P-256 or Ed25519 public key are an
    ``IntegrityError`` (exit 5), since nothing can be verified against a corrupt pinned key.
    """
    pem, label = _read(source, "public key")
    if b"PRIVATE KEY-----" in pem:
        raise UsageError(f"{label}: is a private key; verify with the public key (.pub.pem)")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IntegrityError(f"{label}: not a valid PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise IntegrityError(f"{label}: a {type(key).__name__}; lineage verifies ECDSA P-256 "
                             "or Ed25519 signatures")
    try:
        algorithm_of(key)
    except InputError as exc:
        raise IntegrityError(f"{label}: {exc.message}") from exc
    return key


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """A raw signature of ``data``: DER ECDSA over SHA-256(data), or Ed25519 over data."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_bytes(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``key``'s signature of ``data`` (the scheme of ``sign_bytes``)."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def passphrase_from_env(var: str) -> bytes:
    """The passphrase held by environment variable ``var``, as the bytes the environment holds
    (UTF-8 text, or any bytes: ``os.fsencode`` undoes the decoding Python applied); unset or
    empty is refused."""
    value = os.environ.get(var)
    if value is None:
        raise UsageError(f"environment variable {var} is not set (it should hold the passphrase)")
    if not value:
        raise UsageError(f"environment variable {var} is empty (it should hold the passphrase)")
    return os.fsencode(value)
