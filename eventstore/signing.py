"""The signed part of a checkpoint: its bytes, its record and export, and Ed25519 keys.

A checkpoint (a signed tree head) is ``tree_size``, ``root_hash`` and
``timestamp_ms``, signed with Ed25519 over ``checkpoint_message``'s bytes.
Keys are passed in by the caller: this module reads a key file only when
asked to, never configuration or the environment. docs/integrity.md is the
normative description; ``checkpoints.py`` takes, stores and proves them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .checks import check_path, shown
from .errors import InvalidInput, InvalidProof

SIGNING_CONTEXT = b"agent-eventstore checkpoint v1\n"
"""The first bytes of every signed message: they tie a signature to this use."""
CHECKPOINT_FORMAT = "agent-eventstore/checkpoint/v1"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
U64_MAX = 2**64 - 1
"""The largest tree size or timestamp: the signed bytes hold each in 8 bytes."""


# -- the signed bytes and the records -----------------------------------------


def checkpoint_message(tree_size: int, root: bytes, timestamp_ms: int) -> bytes:
    """The bytes a checkpoint's signature covers (docs/integrity.md)."""
    return SIGNING_CONTEXT + tree_size.to_bytes(8, "big") + timestamp_ms.to_bytes(8, "big") + root


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head, as stored in ``log_checkpoints``."""

    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: str
    public_key: bytes
    signature: bytes
    new: bool = field(default=False, compare=False)
    """True only on what ``take_checkpoint`` returns when that call stored it (not part of the record)."""

    @property
    def timestamp(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.timestamp_ms)

    def message(self) -> bytes:
        return checkpoint_message(self.tree_size, self.root_hash, self.timestamp_ms)

    def to_dict(self) -> dict[str, Any]:
        """The self-contained export: every field, hashes and keys in lowercase hex."""
        return {
            "format": CHECKPOINT_FORMAT,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp_ms": self.timestamp_ms,
            "key_id": self.key_id,
            "public_key": self.public_key.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Checkpoint:
        """Parse an export (not yet trusted: check it with ``verify_checkpoint_signature``)."""
        with parsing_export(document, CHECKPOINT_FORMAT, "checkpoint"):
            return cls(
                export_int(document["tree_size"], 1),
                export_hex(document["root_hash"], 32),
                export_int(document["timestamp_ms"], 0),
                export_hex(document["key_id"], 32).hex(),
                export_hex(document["public_key"], 32),
                export_hex(document["signature"], 64),
            )


@contextmanager
def parsing_export(document: Mapping[str, Any], expected: str, what: str) -> Iterator[None]:
    """Check an export's ``format``, and turn a missing or malformed member into ``InvalidInput``."""
    if not isinstance(document, Mapping) or document.get("format") != expected:
        raise InvalidInput(f"not a {what} export: its format must be {expected!r}")
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed {what} export: {exc!r}") from exc


def export_int(value: Any, minimum: int) -> int:
    if type(value) is not int or not minimum <= value <= U64_MAX:
        raise ValueError(f"expected an integer from {minimum} to 2**64 - 1, not {value!r}")
    return value


def export_hex(value: Any, size: int) -> bytes:
    raw = bytes.fromhex(value) if isinstance(value, str) and value == value.lower() else None
    if raw is None or len(raw) != size:
        raise ValueError(f"expected {size} bytes as lowercase hex, not {value!r}")
    return raw


# -- keys ----------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey | bytes) -> str:
    """A key's id: the lowercase hex SHA-256 of its raw 32-byte public key."""
    raw = public_key if isinstance(public_key, bytes) else raw_public_key(public_key)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(raw)
    return digest.finalize().hex()


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    """The 32-byte encoding of a public key (RFC 8032)."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def save_key_pair(signing_key: Ed25519PrivateKey, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the private key to ``path`` (PEM, PKCS #8, mode 0600) and the public key to ``path.pub``.

    Refuses to overwrite either file: both are created (exclusively) before
    either is written, so a refusal leaves nothing behind. Returns both paths.
    """
    private = check_path("a key file", path)
    if not private.name or private.name in (".", ".."):
        raise InvalidInput(f"a key file needs a file name, not {os.fspath(path)!r}")
    public = private.with_name(private.name + ".pub")
    private_pem = signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    descriptors: list[tuple[Path, int]] = []
    try:
        for target, mode in ((private, 0o600), (public, 0o644)):
            descriptors.append((target, _create(target, mode)))
        for (target, descriptor), content in zip(descriptors, (private_pem, public_pem), strict=True):
            try:
                with os.fdopen(descriptor, "wb", closefd=False) as file:
                    file.write(content)
            except OSError as exc:
                raise InvalidInput(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        for target, _ in descriptors:  # only files this call created, so nothing of anyone else's
            with contextlib.suppress(OSError):
                target.unlink()
        raise
    finally:
        for _, descriptor in descriptors:
            os.close(descriptor)
    return private, public


def _create(target: Path, mode: int) -> int:
    """A new, empty file, opened for writing; ``InvalidInput`` if it exists or cannot be made."""
    try:
        return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise InvalidInput(f"{target} exists already; not overwriting a key") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot write {target}: {exc.strerror}") from exc


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an unencrypted PEM Ed25519 private key (as ``save_key_pair`` writes it)."""
    pem = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key (the ``.pub`` file ``save_key_pair`` writes)."""
    pem = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


MAX_KEY_FILE_BYTES = 16_384
"""More than any PEM key file holds (an Ed25519 one is about 120 bytes)."""


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a key file: a regular file (a FIFO would wait for ever, ``/dev/zero`` fill memory)."""
    check_path("a key file", path)
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:  # a FIFO opens without a writer
            size = os.fstat(file.fileno())
            if not stat.S_ISREG(size.st_mode):
                raise InvalidInput(f"cannot read key file {path}: not a regular file")
            pem = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(pem) > MAX_KEY_FILE_BYTES:
        raise InvalidInput(f"{path}: {size.st_size:,} bytes is no key file (a PEM key has a few hundred)")
    return pem


def check_trusted_key(public_key: object) -> Ed25519PublicKey | None:
    """``public_key``, None or an Ed25519 public key: a private key, a path or raw bytes is refused."""
    if public_key is not None and not isinstance(public_key, Ed25519PublicKey):
        raise InvalidInput(
            "a trusted key must be an Ed25519PublicKey (load_public_key(path) reads one), "
            f"not {shown(public_key)}"
        )
    return public_key


def verify_checkpoint_signature(checkpoint: Checkpoint, public_key: Ed25519PublicKey | None = None) -> None:
    """Raise ``InvalidProof`` unless the checkpoint is signed by ``public_key``.

    Without a key, the checkpoint's own ``public_key`` is used: that shows the
    record is intact, not who made it. Pass the key you trust to show that.
    """
    check_trusted_key(public_key)
    for name, value, minimum in (
        ("tree size", checkpoint.tree_size, 1),
        ("timestamp_ms", checkpoint.timestamp_ms, 0),
    ):
        if not minimum <= value <= U64_MAX:
            raise InvalidProof(
                f"checkpoint {checkpoint.tree_size}: its {name} {value} is out of range "
                f"({minimum} to 2**64 - 1), so no signature covers it"
            )
    raw = checkpoint.public_key
    if public_key is not None:
        trusted = raw_public_key(public_key)
        if trusted != raw:
            raise InvalidProof(
                f"checkpoint {checkpoint.tree_size} is signed by key {checkpoint.key_id[:16]}, "
                f"not by the trusted key {key_id(trusted)[:16]}"
            )
    if key_id(raw) != checkpoint.key_id:
        raise InvalidProof(f"checkpoint {checkpoint.tree_size}: key_id is not the hash of its public key")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(checkpoint.signature, checkpoint.message())
    except (InvalidSignature, ValueError) as exc:
        raise InvalidProof(f"checkpoint {checkpoint.tree_size}: the signature does not verify") from exc
