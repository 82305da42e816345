"""Signed reports: DSSE/in-toto/Sigstore-bundle shape, interoperability, tampering, CLI round trip.

Every key is generated in a temporary folder; nothing touches the network.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from checkpoints import llama_tensors, run_cli, write_llama_folder
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from safetensors.torch import save_file

from verifier.errors import IntegrityError, UsageError
from verifier.signing import (
    BUNDLE_MEDIA_TYPE,
    INTOTO_PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    Envelope,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    pae,
    private_key_pem,
    public_key_pem,
    sign_envelope,
    sign_report,
    statement_for,
    statement_payload,
    verify_bundle,
)
from verifier.signing.bundle import bundle_json
from verifier.verify import VerifyOptions, verify

ALGORITHMS = ["ecdsa-p256", "ed25519"]
BASE_FILES = ["model.safetensors"]
CANDIDATE_FILES = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def assert_one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines, "no error message"
    assert lines[0].startswith("error: ")
    assert len(lines) <= 2, lines
    assert lines[1:] == [] or lines[1].startswith("hint: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> tuple[Path, Path, bytes]:
    """A tiny base (one file), a derived candidate (two shards) and its report's bytes."""
    root = tmp_path_factory.mktemp("signing-models")
    base = write_llama_folder(root / "base")
    tensors = {k: v * 1.01 for k, v in llama_tensors().items()}
    candidate = write_llama_folder(root / "candidate", tensors, shards=2)
    report = verify(base, candidate, VerifyOptions(probes=("hidden_alignment",)))
    return base, candidate, (report.to_json() + "\n").encode("utf-8")


@dataclass
class Signed:
    base: Path
    candidate: Path
    report: Path
    bundle: Path
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    private: Path
    public: Path

    def verify_report(self, capsys, *extra, key: Path | None = None, models: bool = True):
        argv = ["verify-report", self.bundle, "--key", key or self.public]
        if models:
            argv += ["--models", self.base, self.candidate]
        return run_cli([*argv, *extra], capsys)


def _signed(tmp_path: Path, originals, algorithm: str) -> Signed:
    base_src, candidate_src, report_bytes = originals
    base = Path(shutil.copytree(base_src, tmp_path / "base"))
    candidate = Path(shutil.copytree(candidate_src, tmp_path / "candidate"))
    key = generate_key(algorithm)
    keys = tmp_path / "keys"
    keys.mkdir()
    private, public = keys / "k.key.pem", keys / "k.pub.pem"
    private.write_bytes(private_key_pem(key))
    public.write_bytes(public_key_pem(key))
    report = tmp_path / "out" / "report.json"
    report.parent.mkdir()
    report.write_bytes(report_bytes)
    bundle = tmp_path / "out" / "report.sigstore.json"
    bundle.write_bytes(sign_report(report_bytes, key))
    return Signed(base, candidate, report, bundle, key, private, public)


@pytest.fixture
def signed(tmp_path, originals) -> Signed:
    return _signed(tmp_path, originals, "ecdsa-p256")


@pytest.fixture(params=ALGORITHMS)
def signed_any(request, tmp_path, originals) -> Signed:
    return _signed(tmp_path, originals, request.param)


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _bundle(signed: Signed) -> dict:
    return json.loads(signed.bundle.read_bytes())


def _resign(signed: Signed, payload: bytes, payload_type: str = INTOTO_PAYLOAD_TYPE) -> None:
    envelope = sign_envelope(payload, payload_type, signed.key)
    signed.bundle.write_bytes(bundle_json(envelope, key_id(signed.key)))


# --- the formats ---------------------------------------------------------------------------


def test_pae_is_the_dsse_v1_encoding():
    # the example of the DSSE protocol specification
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    # lengths are bytes, not characters; an empty body still has its separator
    assert pae("t\u00e9", b"") == b"DSSEv1 3 t\xc3\xa9 0 "


def test_statement_names_every_file_of_both_models_and_carries_the_report(signed):
    report_bytes = signed.report.read_bytes()
    statement = statement_for(report_bytes)
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["predicate"] == json.loads(report_bytes)
    # the weights and the config read beside them (a tokenizer too, where there is one)
    expected = [("base/" + n, signed.base / n) for n in sorted(["config.json", *BASE_FILES])] + [
        ("candidate/" + n, signed.candidate / n)
        for n in sorted(["config.json", *CANDIDATE_FILES])]
    assert statement["subject"] == [
        {"name": name, "digest": {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}
        for name, path in expected
    ]


def test_bundle_is_a_sigstore_v03_bundle_with_a_verifiable_dsse_signature(signed_any):
    bundle = _bundle(signed_any)
    public = signed_any.key.public_key()
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    kid = hashlib.sha256(der).hexdigest()
    assert bundle["mediaType"] == BUNDLE_MEDIA_TYPE == (
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    )
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == kid
    envelope = bundle["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [kid]
    payload = base64.b64decode(envelope["payload"], validate=True)
    assert payload == statement_payload(statement_for(signed_any.report.read_bytes()))
    sig = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
    message = b"DSSEv1 %d %b %d %b" % (len(INTOTO_PAYLOAD_TYPE), INTOTO_PAYLOAD_TYPE.encode(),
                                       len(payload), payload)
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(sig, message, ec.ECDSA(hashes.SHA256()))  # DER over SHA-256(PAE)
    else:
        public.verify(sig, message)  # Ed25519 over PAE
    result = verify_bundle(signed_any.bundle.read_bytes(), public)
    assert result.key_id == kid
    assert result.report.verdict == "derived"
    assert result.models is None


def test_sign_refuses_what_is_not_a_lineage_report(signed, capsys):
    signed.report.write_text('{"verdict": "derived"}')
    code, _, err = run_cli(["sign", signed.report, "--key", signed.private], capsys)
    assert code == 4
    assert_one_line_error(err, "not a lineage report")


def test_sign_refuses_a_report_without_digests(signed, capsys):
    data = json.loads(signed.report.read_bytes())
    for side in ("base", "candidate"):
        for record in data["models"][side]["files"]:
            record["sha256"] = ""
    signed.report.write_text(json.dumps(data))
    code, _, err = run_cli(["sign", signed.report, "--key", signed.private], capsys)
    assert code == 4
    assert_one_line_error(err, "no sha256", "--no-hash")


# --- interoperability with securesystemslib ------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_securesystemslib_verifies_a_lineage_bundle(tmp_path, originals, algorithm):
    dsse = pytest.importorskip("securesystemslib.dsse")
    from securesystemslib.signer import SSlibKey

    signed = _signed(tmp_path, originals, algorithm)
    envelope_dict = copy.deepcopy(_bundle(signed)["dsseEnvelope"])
    envelope = dsse.Envelope.from_dict(envelope_dict)
    public = signed.key.public_key()
    key = SSlibKey.from_crypto(public, keyid=key_id(public))
    assert envelope.pae() == pae(envelope.payload_type, envelope.payload)
    assert key.keyid in envelope.verify([key], 1)
    # and it rejects a lineage bundle signed by another key
    other = SSlibKey.from_crypto(generate_key(algorithm).public_key(), keyid=key_id(public))
    with pytest.raises(Exception, match="(?i)threshold|verif"):
        dsse.Envelope.from_dict(copy.deepcopy(_bundle(signed)["dsseEnvelope"])).verify([other], 1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_lineage_verifies_an_envelope_signed_by_securesystemslib(tmp_path, originals, algorithm,
                                                                  capsys):
    dsse = pytest.importorskip("securesystemslib.dsse")
    from securesystemslib.signer import CryptoSigner

    signed = _signed(tmp_path, originals, algorithm)
    payload = statement_payload(statement_for(signed.report.read_bytes()))
    envelope = dsse.Envelope(payload, INTOTO_PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(signed.key))  # securesystemslib's own keyid, not lineage's
    bare = envelope.to_dict()

    result = verify_bundle(json.dumps(bare).encode(), signed.key.public_key(),
                           models=(signed.base, signed.candidate))
    assert result.report.verdict == "derived"
    # wrapped in a Sigstore bundle, and through the CLI
    signed.bundle.write_bytes(bundle_json(Envelope.model_validate(bare), "any-hint"))
    code, out, err = signed.verify_report(capsys)
    assert code == 0, err
    assert "verified" in out
    # a bare envelope file works on the command line too
    signed.bundle.write_text(json.dumps(bare))
    code, _, err = signed.verify_report(capsys)
    assert code == 0, err


# --- tampering: every failure is exit 5 with a one-line reason ----------------------------


def test_untampered_bundle_and_models_verify(signed, capsys):
    code, out, err = signed.verify_report(capsys)
    assert code == 0, err
    assert key_id(signed.key) in out
    assert "derived" in out
    assert "hold exactly the signed files" in out
    assert "(2 weight files + config.json, llama)" in out


def test_flipped_payload_byte(signed, capsys):
    bundle = _bundle(signed)
    payload = bytearray(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload[len(payload) // 2] ^= 0x01
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
    signed.bundle.write_text(json.dumps(bundle))
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "signature does not verify")


def test_flipped_payload_character_in_the_bundle_file(signed, capsys):
    raw = bytearray(signed.bundle.read_bytes())
    at = raw.index(b'"payload": "') + len(b'"payload": "') + 40
    raw[at] = ord("A") if raw[at] != ord("A") else ord("B")
    signed.bundle.write_bytes(bytes(raw))
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err)


def test_flipped_signature_byte(signed, capsys):
    bundle = _bundle(signed)
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    signed.bundle.write_text(json.dumps(bundle))
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "signature does not verify")


def test_wrong_key(signed, tmp_path, capsys):
    other = tmp_path / "other.pub.pem"
    other_key = generate_key()
    other.write_bytes(public_key_pem(other_key))
    code, _, err = signed.verify_report(capsys, key=other)
    assert code == 5
    assert_one_line_error(err, "signature does not verify", key_id(signed.key),
                          key_id(other_key))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_flipped_public_key_byte(tmp_path, originals, algorithm, capsys):
    signed = _signed(tmp_path, originals, algorithm)
    der = bytearray(signed.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    der[-1] ^= 0x01  # inside the key bits: another key, or no valid key at all
    body = base64.encodebytes(bytes(der)).decode()
    signed.public.write_text(f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n")
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err)


@pytest.mark.parametrize("side", ["base", "candidate"])
def test_flipped_model_byte(signed, side, capsys):
    folder = signed.base if side == "base" else signed.candidate
    name = (BASE_FILES if side == "base" else CANDIDATE_FILES)[-1]
    _flip(folder / name)
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, f"{side}/{name}", "sha256")
    # without --models only the bundle is checked, and it is intact
    code, out, err = signed.verify_report(capsys, models=False)
    assert code == 0, err
    assert "not checked" in out


def test_renamed_model_file(signed, capsys):
    (signed.base / "model.safetensors").rename(signed.base / "weights.safetensors")
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "base/model.safetensors", "missing")


def test_missing_shard(signed, capsys):
    (signed.candidate / CANDIDATE_FILES[1]).unlink()
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, f"candidate/{CANDIDATE_FILES[1]}", "missing")


def test_added_weight_file(signed, capsys):
    save_file({"extra.weight": torch.zeros(3)}, str(signed.base / "extra.safetensors"))
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "base/extra.safetensors", "does not name")


def test_added_weight_file_that_breaks_the_checkpoint(signed, capsys):
    # a copy of the weights: the folder no longer opens (tensors appear twice)
    shutil.copy(signed.base / "model.safetensors", signed.base / "copy.safetensors")
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "base model")


def test_files_lineage_does_not_read_are_not_part_of_the_set(signed, capsys):
    (signed.base / "README.md").write_text("hello\n")
    code, out, err = signed.verify_report(capsys)
    assert code == 0, err
    assert "note" not in out
    # a weights file that no shard index names is not read, so it is outside the signed set;
    # verification passes and says so
    save_file({"stray.weight": torch.zeros(3)}, str(signed.candidate / "stray.safetensors"))
    code, out, err = signed.verify_report(capsys)
    assert code == 0, err
    assert "stray.safetensors" in out
    assert "not covered by the signature" in out
    result = verify_bundle(signed.bundle.read_bytes(), signed.public,
                           models=(signed.base, signed.candidate))
    assert result.models is not None
    assert result.models[0].files == ("config.json", *BASE_FILES)
    assert result.models[1].files == ("config.json", *CANDIDATE_FILES)
    assert result.models[1].unread == ("stray.safetensors",)


def test_wrong_payload_type_even_when_signed(signed, capsys):
    payload = statement_payload(statement_for(signed.report.read_bytes()))
    _resign(signed, payload, "application/json")
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "payloadType", "application/json")
    # changing the type without re-signing breaks the signature (PAE covers the type)
    bundle = _bundle(signed)
    bundle["dsseEnvelope"]["payloadType"] = INTOTO_PAYLOAD_TYPE
    signed.bundle.write_text(json.dumps(bundle))
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "signature does not verify")


def test_wrong_predicate_type_even_when_signed(signed, capsys):
    statement = statement_for(signed.report.read_bytes())
    statement["predicateType"] = "https://slsa.dev/provenance/v1"
    _resign(signed, statement_payload(statement))
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "predicateType", "https://slsa.dev/provenance/v1")


@pytest.mark.parametrize("edit", ["digest", "drop", "add", "rename"])
def test_subjects_must_match_the_report_even_when_signed(signed, edit, capsys):
    statement = statement_for(signed.report.read_bytes())
    subjects = statement["subject"]
    if edit == "digest":
        subjects[0]["digest"]["sha256"] = "0" * 64
    elif edit == "drop":
        subjects.pop()
    elif edit == "add":
        subjects.append({"name": "base/evil.safetensors", "digest": {"sha256": "1" * 64}})
    else:
        subjects[0]["name"] = "base/other.safetensors"
    _resign(signed, statement_payload(statement))
    code, _, err = signed.verify_report(capsys, models=False)
    assert code == 5
    assert_one_line_error(err, "subject")


def test_a_payload_with_duplicate_keys_is_refused_even_when_signed(signed, capsys):
    payload = statement_payload(statement_for(signed.report.read_bytes()))
    payload = payload.replace(b'{"_type":', b'{"predicateType":"x","_type":', 1)
    _resign(signed, payload)
    code, _, err = signed.verify_report(capsys, models=False)
    assert code == 5
    assert_one_line_error(err, "repeats the key 'predicateType'")


def test_a_predicate_that_is_not_a_report_even_when_signed(signed, capsys):
    statement = statement_for(signed.report.read_bytes())
    statement["predicate"]["surprise"] = 1
    _resign(signed, statement_payload(statement))
    code, _, err = signed.verify_report(capsys, models=False)
    assert code == 5
    assert_one_line_error(err, "not a lineage report")


@pytest.mark.parametrize("content", ["truncated", "not json", "empty", "a list", "other json"])
def test_broken_bundle(signed, content, capsys):
    raw = signed.bundle.read_bytes()
    signed.bundle.write_bytes({
        "truncated": raw[: len(raw) // 2], "not json": b"\x00\xffPK garbage", "empty": b"",
        "a list": b"[]", "other json": b'{"hello": "world"}',
    }[content])
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err)


def test_unknown_bundle_media_type(signed, capsys):
    bundle = _bundle(signed)
    bundle["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1"
    signed.bundle.write_text(json.dumps(bundle))
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "mediaType")


def test_library_raises_integrity_errors(signed):
    _flip(signed.candidate / CANDIDATE_FILES[0])
    with pytest.raises(IntegrityError, match="sha256"):
        verify_bundle(signed.bundle.read_bytes(), signed.public,
                      models=(signed.base, signed.candidate))
    with pytest.raises(IntegrityError, match="not valid JSON"):
        verify_bundle(b'{"mediaType": ', signed.public)


def test_a_private_key_is_not_a_pinned_public_key(signed, capsys):
    code, _, err = signed.verify_report(capsys, key=signed.private)
    assert code == 2
    assert_one_line_error(err, "private key")


# --- keys ----------------------------------------------------------------------------------


def test_keygen_writes_a_0600_private_key_and_prints_no_key_material(tmp_path, capsys):
    code, out, err = run_cli(["keygen", "--out", tmp_path / "keys"], capsys)
    assert code == 0, err
    private, public = tmp_path / "keys" / "lineage.key.pem", tmp_path / "keys" / "lineage.pub.pem"
    if os.name == "posix":
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = load_private_key(private)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key_id(load_public_key(public)) == key_id(key)
    assert key_id(key) in out
    pem_lines = private.read_text().splitlines()[1:-1] + public.read_text().splitlines()[1:-1]
    assert "KEY-----" not in out + err
    assert not any(line in out + err for line in pem_lines)
    # an existing key is never overwritten silently
    code, _, err = run_cli(["keygen", "--out", tmp_path / "keys"], capsys)
    assert code == 2
    assert_one_line_error(err, "already exists")
    code, _, err = run_cli(["keygen", "--out", tmp_path / "keys", "--force"], capsys)
    assert code == 0, err
    assert key_id(load_private_key(private)) != key_id(key)


def test_keygen_into_a_file_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    code, _, err = run_cli(["keygen", "--out", blocker / "keys"], capsys)
    assert code == 4
    assert_one_line_error(err, "cannot write the key pair")


def test_encrypted_key_needs_its_passphrase(signed, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("verifier.cli._stdin_is_tty", lambda: False)
    monkeypatch.setenv("LINEAGE_TEST_PASSPHRASE", "correct horse battery staple")
    code, out, err = run_cli(["keygen", "--out", tmp_path / "enc", "--passphrase-env",
                              "LINEAGE_TEST_PASSPHRASE"], capsys)
    assert code == 0, err
    assert "encrypted" in out
    private = tmp_path / "enc" / "lineage.key.pem"
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    if os.name == "posix":
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    sign = ["sign", signed.report, "--key", private]
    # no passphrase, no terminal: a usage error
    code, _, err = run_cli(sign, capsys)
    assert code == 2
    assert_one_line_error(err, "encrypted")
    # a wrong passphrase: a usage error as well, never a traceback
    monkeypatch.setenv("WRONG_PASSPHRASE", "incorrect")
    code, _, err = run_cli([*sign, "--passphrase-env", "WRONG_PASSPHRASE"], capsys)
    assert code == 2
    assert_one_line_error(err, "wrong passphrase")
    with pytest.raises(UsageError, match="wrong passphrase"):
        load_private_key(private, b"incorrect")
    # an unset variable is named in the error
    code, _, err = run_cli([*sign, "--passphrase-env", "NO_SUCH_VARIABLE_FOR_LINEAGE"], capsys)
    assert code == 2
    assert_one_line_error(err, "NO_SUCH_VARIABLE_FOR_LINEAGE")
    # the right one signs, and the bundle verifies with the public key
    code, out, err = run_cli([*sign, "--passphrase-env", "LINEAGE_TEST_PASSPHRASE"], capsys)
    assert code == 0, err
    assert "correct horse" not in out + err
    code, _, err = signed.verify_report(capsys, key=tmp_path / "enc" / "lineage.pub.pem")
    assert code == 0, err


# --- the command line, end to end ---------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_verify_sign_key_round_trip(originals, tmp_path, algorithm, capsys):
    base_src, candidate_src, _ = originals
    base = Path(shutil.copytree(base_src, tmp_path / "base"))
    candidate = Path(shutil.copytree(candidate_src, tmp_path / "candidate"))
    code, _, err = run_cli(["keygen", "--out", tmp_path / "keys", "--algorithm", algorithm],
                           capsys)
    assert code == 0, err
    private, public = tmp_path / "keys" / "lineage.key.pem", tmp_path / "keys" / "lineage.pub.pem"
    report = tmp_path / "out" / "report.json"
    code, _, err = run_cli(["verify", base, candidate, "--sign-key", private, "--output", report,
                            "--probes", "hidden_alignment", "--format", "json"], capsys)
    assert code == 0, err
    bundle = tmp_path / "out" / "report.sigstore.json"
    assert sorted(p.name for p in report.parent.iterdir()) == [
        "report.json", "report.sigstore.json"]  # no temporary files left
    assert f"signed: {bundle}" in err
    # the predicate is the report file, key for key
    result = verify_bundle(bundle.read_bytes(), public, models=(base, candidate))
    assert result.statement.predicate == json.loads(report.read_bytes())
    code, out, err = run_cli(["verify-report", bundle, "--key", public, "--models", base,
                              candidate], capsys)
    assert code == 0, err
    assert "verified" in out
    code, out, err = run_cli(["verify-report", bundle, "--key", public, "--format", "json"],
                             capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["verified"] is True
    assert summary["predicate_type"] == PREDICATE_TYPE
    _flip(candidate / CANDIDATE_FILES[0])
    code, _, err = run_cli(["verify-report", bundle, "--key", public, "--models", base,
                            candidate], capsys)
    assert code == 5
    assert_one_line_error(err, "sha256")


def test_sign_key_refuses_no_hash_and_needs_output(signed, tmp_path, capsys):
    argv = ["verify", signed.base, signed.candidate, "--sign-key", signed.private]
    code, _, err = run_cli([*argv, "--output", tmp_path / "r.json", "--no-hash"], capsys)
    assert code == 2
    assert_one_line_error(err, "--no-hash")
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert_one_line_error(err, "--output")
    assert not (tmp_path / "r.json").exists()


def test_sign_writes_the_bundle_beside_the_report(signed, capsys):
    signed.bundle.unlink()
    code, out, err = run_cli(["sign", signed.report, "--key", signed.private], capsys)
    assert code == 0, err
    assert signed.bundle.is_file()
    assert key_id(signed.key) in out
    code, _, err = signed.verify_report(capsys)
    assert code == 0, err


def test_no_output_lands_on_a_key_role_map_or_bundle_the_run_reads(signed, tmp_path, capsys):
    # a private key overwritten by its own run's report cannot be had back
    key_before = signed.private.read_bytes()
    code, _, err = run_cli(["verify", signed.base, signed.candidate, "--probes", "embeddings",
                            "-o", signed.private, "--sign-key", signed.private], capsys)
    assert code == 2
    assert_one_line_error(err, "is a file this run reads")
    assert signed.private.read_bytes() == key_before
    role_map = tmp_path / "roles.yaml"
    role_map.write_text("{}\n")
    code, _, err = run_cli(["verify", signed.base, signed.candidate, "--role-map", role_map,
                            "--html", role_map], capsys)
    assert code == 2
    assert role_map.read_text() == "{}\n"
    # render: neither the bundle beside the report nor the pinned key
    for target in (signed.bundle, signed.public):
        before = target.read_bytes()
        code, _, err = run_cli(["render", signed.report, "--key", signed.public, "-o", target],
                               capsys)
        assert code == 2
        assert_one_line_error(err, "is a file this run reads")
        assert target.read_bytes() == before
    # a folder in place of a file name is said so, not a traceback
    code, _, err = run_cli(["render", signed.report.parent], capsys)
    assert code == 4
    assert_one_line_error(err, "is a folder")
    code, _, err = run_cli(["verify", signed.base, signed.candidate, "-o", tmp_path,
                            "--sign-key", signed.private], capsys)
    assert code == 2
    assert_one_line_error(err, "is a folder")


def test_keygen_checks_both_halves_before_writing_either(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert run_cli(["keygen", "--out", keys], capsys)[0] == 0
    private = keys / "lineage.key.pem"
    before = private.read_bytes()
    (keys / "lineage.pub.pem").unlink()
    (keys / "lineage.pub.pem").mkdir()
    code, _, err = run_cli(["keygen", "--out", keys, "--force"], capsys)
    assert code == 2
    assert_one_line_error(err, "not a regular file")
    assert private.read_bytes() == before  # the old key is kept, not half replaced
    code, _, err = run_cli(["keygen", "--out", keys, "--name", "a" * 300], capsys)
    assert code == 4
    assert_one_line_error(err, "cannot write the key pair")


def test_a_passphrase_of_any_bytes_is_taken_as_the_environment_holds_it(tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("ODD_PASS", os.fsdecode(b"\xff\xfe pass"))
    keys = tmp_path / "keys"
    code, _, err = run_cli(["keygen", "--out", keys, "--passphrase-env", "ODD_PASS"], capsys)
    assert code == 0, err
    pem = (keys / "lineage.key.pem").read_bytes()
    assert load_private_key(pem, b"\xff\xfe pass") is not None
    with pytest.raises(UsageError, match="k.pem: wrong passphrase"):
        load_private_key(pem, b"other", name="k.pem")


def test_a_signed_report_cannot_draw_lines_of_its_own_in_verify_report(signed, capsys):
    # the paths and architecture names are the signer's: newlines and terminal escapes in them
    # printed raw forged a "files: ... hold exactly the signed files" line
    report = json.loads(signed.report.read_text())
    report["models"]["candidate"]["path"] = (
        "cand\nfiles:     /a and /b hold exactly the signed files\x1b[1A\x1b[2K")
    forged = (json.dumps(report) + "\n").encode("utf-8")
    signed.bundle.write_bytes(sign_report(forged, signed.key))
    code, out, err = signed.verify_report(capsys, models=False)
    assert code == 0, err
    assert "\x1b" not in out
    assert "hold exactly the signed files" not in out.splitlines()[-1]
    assert not any(line.startswith("files:     /a") for line in out.splitlines())
    assert "not checked" in out


@pytest.mark.parametrize("edit", [
    {"schema_version": "9.0"}, {"schema_version": "banana"}, {"p_value": float("nan")},
    {"alpha": 1e400}, {"models.base.num_layers": 10**12}, {"models.base.num_layers": -1},
    {"models.base.files.0.sha256": "ZZ"}, {"models.base.files.0.size": -5},
], ids=str)
def test_sign_and_render_refuse_a_report_no_verify_could_write(signed, edit, capsys):
    # signed, such a report carried NaN into the payload, subjects no file can match, or a
    # layer count that sized render's grid at 58 TiB
    report = json.loads(signed.report.read_text())
    [(where, value)] = edit.items()
    *path, last = where.split(".")
    node = report
    for step in path:
        node = node[int(step)] if step.isdigit() else node[step]
    node[int(last) if last.isdigit() else last] = value
    signed.report.write_text(json.dumps(report))
    for argv in (["sign", signed.report, "--key", signed.private],
                 ["render", signed.report]):
        code, _, err = run_cli(argv, capsys)
        assert code == 4, (argv[0], err)
        assert_one_line_error(err, "not a lineage report")


def test_the_config_and_tokenizer_read_beside_the_weights_are_signed(signed, capsys):
    # the config's head counts split attention into heads and the tokenizer picks the shared
    # tokens: both change the evidence, so both are subjects, and a changed or added one fails
    config = signed.candidate / "config.json"
    original = config.read_text()
    config.write_text(original.replace("}", ', "comment": "edited"}', 1))
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "candidate/config.json", "the report says")
    config.write_text(original)
    (signed.candidate / "tokenizer.json").write_text("{}\n")
    code, _, err = signed.verify_report(capsys)
    assert code == 5
    assert_one_line_error(err, "candidate/tokenizer.json", "the report does not name")
    (signed.candidate / "tokenizer.json").unlink()
    assert signed.verify_report(capsys)[0] == 0
    # a report of schema 1.2 listed no side files: they were not signed and are not required
    report = json.loads(signed.report.read_text())
    report["schema_version"] = "1.2"
    for side in ("base", "candidate"):
        del report["models"][side]["side_files"]
    signed.bundle.write_bytes(sign_report((json.dumps(report) + "\n").encode("utf-8"),
                                          signed.key))
    (signed.candidate / "tokenizer.json").write_text("{}\n")
    code, _, err = signed.verify_report(capsys)
    assert code == 0, err
