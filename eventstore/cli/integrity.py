"""Command-line commands for signed checkpoints and Merkle proofs: keygen, checkpoint, prove.

Each is one call into ``eventstore.checkpoints`` plus formatting; ``--json``
gives the same answer for scripts. A proof or checkpoint that fails to
verify prints ``FAILED: ...`` and exits with status 2, like ``verify``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import orjson

from .. import checkpoints as cp
from ..errors import IntegrityViolation, InvalidInput
from ..exportfile import refuse_non_file
from ..exporting import refuse_own_files
from ..wording import counted
from .audit import resolve_event  # FLOW@REVISION as `audit --why` reads it
from .output import echo, echo_json, printable, problem_dict
from .params import POSITION, FilePath, number_in

_KEY_HELP = "Ed25519 private key file (PEM), as `eventstore keygen` writes it; also EVENTSTORE_SIGNING_KEY."
_TRUST_HELP = "A trusted public key file (.pub): signatures must be by this key."


@contextmanager
def _integrity() -> Iterator[None]:
    """A proof or signature that does not verify: one line and exit status 2."""
    try:
        yield
    except IntegrityViolation as exc:
        echo(f"FAILED: {printable(exc)}", err=True)
        sys.exit(2)


def _describe(checkpoint: cp.Checkpoint) -> str:
    try:
        when = checkpoint.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except OverflowError:  # a tampered row: `checkpoint --verify` reports it
        when = f"timestamp_ms {checkpoint.timestamp_ms} (not a date)"
    return (
        f"size {checkpoint.tree_size:>10}  root {checkpoint.root_hash.hex()}  {when}  "
        f"key {printable(checkpoint.key_id[:16])}"
    )


def _trusted(path: Path | None) -> Any:
    return None if path is None else cp.load_public_key(path)


def register(main: click.Group, open_store: Any, errors: Any) -> None:
    """Add the commands to the ``eventstore`` group."""

    @main.command()
    @click.argument("path", type=FilePath())
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def keygen(path: Path, as_json: bool) -> None:
        """Write a new Ed25519 key pair: PATH (private, mode 0600) and PATH.pub."""
        with errors():
            key = cp.generate_key()
            private, public = cp.save_key_pair(key, path)
        identity = cp.key_id(key.public_key())
        if as_json:
            echo_json({"private_key": str(private), "public_key": str(public), "key_id": identity})
        else:
            echo(f"wrote {printable(private)} (keep it secret) and {printable(public)}\nkey id {identity}")

    @main.command()
    @click.option("--key", "key_path", envvar="EVENTSTORE_SIGNING_KEY", type=Path, help=_KEY_HELP)
    @click.option("--list", "listing", is_flag=True, help="List the stored checkpoints instead.")
    @click.option(
        "--export",
        "export_path",
        type=FilePath(allow_dash=True),
        help="Write a stored checkpoint (the latest, or --size) as self-contained JSON to this file.",
    )
    @click.option(
        "--size", type=POSITION, default=None, help="With --export: the checkpoint of this tree size."
    )
    @click.option("--force", is_flag=True, help="With --export: replace FILE if it exists.")
    @click.option(
        "--verify", "verifying", is_flag=True, help="Recompute every checkpoint from the log and check it."
    )
    @click.option("--public-key", "trusted", type=Path, default=None, help=_TRUST_HELP)
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_context
    def checkpoint(
        ctx: click.Context,
        key_path: Path | None,
        listing: bool,
        export_path: Path | None,
        size: int | None,
        force: bool,
        verifying: bool,
        trusted: Path | None,
        as_json: bool,
    ) -> None:
        """Sign the Merkle root over every event so far and store it (a checkpoint).

        With --list, --export or --verify, work on the stored checkpoints instead.
        """
        if listing + (export_path is not None) + verifying > 1:
            raise click.UsageError("use one of --list, --export and --verify")
        for given, option in ((size is not None, "--size"), (force, "--force")):
            if given and export_path is None:
                raise click.UsageError(f"{option} goes with --export FILE")
        if listing:
            with open_store(ctx) as store, errors():
                found = cp.list_checkpoints(store)
            if as_json:
                echo_json([c.to_dict() for c in found])
            elif not found:
                echo("no checkpoints yet: take one with `eventstore checkpoint --key PATH`")
            for c in [] if as_json else found:
                echo(_describe(c))
        elif export_path is not None:
            _export(ctx, open_store, errors, export_path, size, force=force, as_json=as_json)
        elif verifying:
            _verify(ctx, open_store, errors, trusted, as_json)
        else:
            with open_store(ctx) as store, errors(), _integrity():
                if key_path is None:
                    raise InvalidInput("taking a checkpoint needs --key PATH or EVENTSTORE_SIGNING_KEY=PATH")
                key = cp.load_signing_key(key_path)
                taken = cp.take_checkpoint(store, key)
            if as_json:
                echo_json({**taken.to_dict(), "new": taken.new})
            elif taken.new:
                echo(f"checkpoint {_describe(taken)}")
            else:
                echo(
                    f"the log has not grown since checkpoint {taken.tree_size} "
                    f"(signed by key {printable(taken.key_id[:16])}): nothing new signed"
                )

    @main.command()
    @click.argument("event", required=False)
    @click.option(
        "--checkpoint",
        "size",
        type=POSITION,
        default=None,
        help="Tree size of the checkpoint (default: latest).",
    )
    @click.option(
        "--consistency",
        type=(POSITION, POSITION),
        default=None,
        metavar="OLD NEW",
        help="Prove the checkpoint of size NEW extends the one of size OLD instead.",
    )
    @click.option("--public-key", "trusted", type=Path, default=None, help=_TRUST_HELP)
    @click.option("--json", "as_json", is_flag=True, help="The checkpoint(s) and the proof as JSON.")
    @click.pass_context
    def prove(
        ctx: click.Context,
        event: str | None,
        size: int | None,
        consistency: tuple[int, int] | None,
        trusted: Path | None,
        as_json: bool,
    ) -> None:
        """Prove EVENT (an event id, a position or FLOW@REVISION) is in a signed checkpoint, and check
        the proof.

        With --consistency OLD NEW, prove one checkpoint extends another.
        """
        if (event is None) == (consistency is None):
            raise click.UsageError("give an EVENT, or --consistency OLD NEW")
        with open_store(ctx) as store, errors(), _integrity():
            public_key = _trusted(trusted)
            if consistency is not None:
                document, lines, path, verdict = _prove_consistency(store, consistency, public_key)
            elif event is not None:
                document, lines, path, verdict = _prove_inclusion(store, event, size, public_key)
        if as_json:
            echo_json({"verified": True, **document})
            return
        for line in lines:
            echo(line)
        echo(f"path ({len(path)} node{'' if len(path) == 1 else 's'}):")
        for node in path:
            echo(f"  {node.hex()}")
        echo(verdict)


_Proved = tuple[dict[str, Any], list[str], tuple[bytes, ...], str]


def _prove_inclusion(store: Any, event: str, size: int | None, public_key: Any) -> _Proved:
    position = number_in(event, "position")
    if position is None and "@" in event:  # FLOW@REVISION, read as `audit --why` reads it
        position = resolve_event(store, event).position
    signed = cp.get_checkpoint(store, size)
    cp.verify_checkpoint_signature(signed, public_key)
    proof = cp.inclusion_proof(store, event if position is None else position, signed)
    proof.verify(signed)
    lines = [
        f"event {printable(proof.flow_id)}@{proof.revision} at position {proof.position}",
        f"leaf  {proof.leaf.hex()}",
        f"checkpoint {_describe(signed)}",
    ]
    verdict = f"verified: the event is in the signed log of {signed.tree_size} events"
    return {"checkpoint": signed.to_dict(), "proof": proof.to_dict()}, lines, proof.path, verdict


def _prove_consistency(store: Any, sizes: tuple[int, int], public_key: Any) -> _Proved:
    old, new = (cp.get_checkpoint(store, size) for size in sizes)
    for signed in (old, new):
        cp.verify_checkpoint_signature(signed, public_key)
    proof = cp.consistency_proof(store, old, new)
    proof.verify(old, new)
    lines = [f"old {_describe(old)}", f"new {_describe(new)}"]
    verdict = f"verified: the log of {new.tree_size} events extends the log of {old.tree_size}"
    return {"old": old.to_dict(), "new": new.to_dict(), "proof": proof.to_dict()}, lines, proof.path, verdict


def _export(
    ctx: click.Context,
    open_store: Any,
    errors: Any,
    path: Path,
    size: int | None,
    *,
    force: bool,
    as_json: bool,
) -> None:
    to_stdout = str(path) == "-"
    with open_store(ctx) as store, errors():
        found = cp.get_checkpoint(store, size)
        if not to_stdout:
            refuse_own_files(store, path)
    text = orjson.dumps(found.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"
    if to_stdout:
        click.echo(text, nl=False)
        return
    with errors():
        _write_new(path, text.encode(), overwrite=force)
    if as_json:
        echo_json({"exported": str(path), "tree_size": found.tree_size})
    else:
        echo(f"exported checkpoint of size {found.tree_size} to {printable(path)}")


def _write_new(path: Path, content: bytes, *, overwrite: bool) -> None:
    """Write a file whole or not at all: a synced temporary file in the same directory, then linked
    into place (which fails if ``path`` exists), or renamed over it if ``overwrite``."""
    if not overwrite and os.path.lexists(path):
        raise InvalidInput(f"{path} exists already: export to a new file, or replace it (--force)")
    refuse_non_file(path)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    except FileExistsError as exc:
        raise InvalidInput(f"{path} exists already: export to a new file, or replace it (--force)") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _verify(ctx: click.Context, open_store: Any, errors: Any, trusted: Path | None, as_json: bool) -> None:
    with open_store(ctx) as store, errors():
        report = cp.verify_checkpoints(store, _trusted(trusted))
    if as_json:
        echo_json(
            {
                "ok": report.ok,
                "checkpoints_checked": report.checkpoints_checked,
                "events_checked": report.events_checked,
                "problems": [problem_dict(problem) for problem in report.problems],
            }
        )
    else:
        for problem in report.problems:
            echo(f"BROKEN {printable(problem.detail)}")  # each detail names its checkpoint or leaves
        verdict = "OK" if report.ok else counted(len(report.problems), "problem")
        echo(
            f"{verdict}: {report.checkpoints_checked} checkpoints over {report.events_checked} events checked"
            " (their hashes; `eventstore verify` checks each event's content against its hash)"
        )
    if not report.ok:
        sys.exit(2)
