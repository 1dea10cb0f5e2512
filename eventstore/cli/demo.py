"""``eventstore demo``: the README's first command, a tour of what the store answers.

It records two agent flows through the public API and then asks the
questions users bring: the timeline, the read models, the state at an
earlier revision, a diff, a fork, the audit trail, ``verify`` and a signed
checkpoint proving the approval is in the log.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import Any

import click
import orjson
import sqlalchemy as sa
from click.core import ParameterSource

from ..audit import DecisionEntry, FailureEntry, GateEntry, audit_trail
from ..checkpoints import generate_key, inclusion_proof, take_checkpoint, verify_checkpoint_signature
from ..errors import command_line
from ..timetravel import diff, fork, state_at
from ..wording import counted


def store_options(ctx: click.Context) -> tuple[list[str], bool]:
    """The ``--url`` and ``--schema`` a hint needs to reach the store this command used, and
    whether a password was left out of the URL (a hint is printed: it never shows one)."""
    words: list[str] = []
    hidden = False
    if ctx.find_root().get_parameter_source("url") is not ParameterSource.DEFAULT:
        url = sa.make_url(ctx.obj["url"])
        without = _without_password(url)
        hidden = without != url
        words += ["--url", without.render_as_string(hide_password=False)]
    if "schema" in ctx.obj["options"]:
        words += ["--schema", ctx.obj["options"]["schema"]]
    return words, hidden


def _without_password(url: sa.URL) -> sa.URL:
    """``url`` with no password: neither its own nor libpq's ``password`` query parameter."""
    without = sa.URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)
    return without.difference_update_query(["password"])  # URL.set(password=None) would keep it


def register(main: click.Group, open_store: Any, errors: Any) -> None:
    """Add ``demo`` to the ``eventstore`` group; ``open_store`` opens a store with the flow read models."""

    @main.command()
    @click.option("--flow", "flow_id", default=None, help="Flow id to record (default: a new one).")
    @click.pass_context
    def demo(ctx: click.Context, flow_id: str | None) -> None:
        """Record two agent flows (a retry, decisions, an approval, a rejection, a failure), then
        show their timeline, read models, a past state, a diff, a fork, the audit trail, verify
        and a signed checkpoint."""
        from projections import FlowQueries
        from projections.demo import record_refund_flow, record_rejected_flow

        flow_id = flow_id or f"refund-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}"
        with open_store(ctx) as store, errors():
            session = f"session-{flow_id}"
            record_refund_flow(store, flow_id, session=session)
            shown_url = _without_password(sa.make_url(ctx.obj["url"])).render_as_string(hide_password=False)
            click.echo(f"recorded flow {flow_id} in {shown_url}\n")
            for event in store.read_flow(flow_id):
                actor = event.metadata.get("actor", "-")
                summary = orjson.dumps(event.data).decode()
                click.echo(
                    f"  r{event.revision:<3} {event.recorded_at:%H:%M:%S.%f}  {event.type:<17} "
                    f"{actor:<17} {summary[:58]:<58}  {event.hash[:12]}"
                )
            queries = FlowQueries(store)
            flow = queries.flow(flow_id)
            click.echo(f"\nread model: {flow.status}, revision {flow.revision}, state {flow.state}")
            for step in queries.steps(flow_id):
                gate = f", gate {step.gate_status} by {step.gate_by}" if step.gate_status else ""
                click.echo(
                    f"  step {step.step_id}: {step.status} after {counted(step.attempts, 'attempt')}{gate}"
                )
            second = f"{flow_id}-b"
            record_rejected_flow(store, second, session=session)
            click.echo(f"\nrecorded flow {second} in the same session: a reviewer rejects, the flow fails")

            before = state_at(store, flow_id, revision=6)
            lookup = before.steps["lookup"]
            click.echo(f"\nstate at revision 6: step lookup {lookup.status}, attempt {lookup.attempts}")
            changes = [c for c in diff(store, flow_id, 6, 12).changes if c.path.startswith("/steps/")]
            click.echo(
                f"diff 6 -> 12: {len(changes)} step changes, e.g. " + ", ".join(c.path for c in changes[:3])
            )
            forked = f"{flow_id}-retry"
            fork(store, flow_id, at_revision=8, new_flow_id=forked, metadata={"actor": "human:ann"})
            click.echo(f"fork: {forked} starts from revision 8 (after the decision, before the approval)")

            click.echo(f"\naudit of {session}: what the agent decided and why, who approved or rejected it")
            approval = None
            labels = {flow_id: "flow 1", second: "flow 2"}
            for entry in audit_trail(store, session=session):
                where = f"  {labels.get(entry.flow_id, entry.flow_id)} r{entry.revision:<3}"
                if isinstance(entry, DecisionEntry):
                    click.echo(
                        f"{where} {entry.actor} decided {entry.decision!r} "
                        f"(confidence {entry.confidence}): {entry.rationale}"
                    )
                elif isinstance(entry, GateEntry) and entry.action != "opened":
                    approval = approval or entry
                    chosen = f" (selected: {', '.join(entry.selections)})" if entry.selections else ""
                    click.echo(f"{where} {entry.actor} {entry.action}{chosen} after seeing {entry.prompt!r}")
                elif isinstance(entry, FailureEntry):
                    click.echo(f"{where} {entry.type}: {entry.error}")
            report = store.verify()
            verdict = "OK" if report.ok else "BROKEN"
            checked = f"{counted(report.events_checked, 'event')} in {counted(report.flows_checked, 'flow')}"
            click.echo(f"\nverify: {verdict} ({checked}, hash chains intact)")
            checkpoint = take_checkpoint(store, generate_key())  # a throwaway key, for the demo only
            if approval is not None:
                proof = inclusion_proof(store, approval.event_id, checkpoint)
                proof.verify(checkpoint)
                verify_checkpoint_signature(checkpoint)
                click.echo(
                    f"checkpoint: {checkpoint.tree_size} events, "
                    f"Merkle root {checkpoint.root_hash.hex()[:16]}, "
                    f"Ed25519-signed; the approval is proven in it ({len(proof.path)} hashes)"
                )
            store, hidden = store_options(ctx)
            hints = [
                command_line("history", flow_id, store=store),
                f"{command_line('audit', store=store)} {shlex.quote(f'--session={session}')}",
                command_line("diff", flow_id, "6", "12", store=store),
            ]
            click.echo("\nnext: " + "\n      ".join(hints))
            if hidden:
                click.echo("      (the password is left out of --url: add it, or set PGPASSWORD)")
            click.echo("      docs/cli.md lists every command.")
