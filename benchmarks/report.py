"""The printed tables: figures side by side, ratios, and the issue's targets."""

from __future__ import annotations

from dataclasses import dataclass

from .harness import Figure

SUBJECTS = ("ours", "es", "raw")


@dataclass(frozen=True, slots=True)
class Target:
    """eventstore must reach ``at_least`` times the ``versus`` subject's figure."""

    backend: str
    workload: str
    versus: str
    at_least: float


TARGETS = (
    Target("sqlite", "single", "es", 1.0),
    Target("sqlite", "single", "raw", 0.25),
    Target("sqlite", "batch", "raw", 0.60),
    Target("sqlite", "read", "es", 0.9),
    Target("postgresql", "single", "es", 1.5),
)

Results = dict[str, dict[str, dict[str, Figure]]]  # backend -> workload -> subject -> figure


def workload_titles(events: int, writers: int) -> dict[str, str]:
    return {
        "single": "single appends (1 event/tx, rev. check)",
        "batch": "100-event batch appends",
        "read": f"read_all + decode ({events:,} events)",
        "writers": f"{writers} concurrent writers (processes)",
    }


def ratio(results: Results, backend: str, workload: str, versus: str) -> float | None:
    figures = results.get(backend, {}).get(workload, {})
    if "ours" not in figures or versus not in figures or figures[versus].rate == 0:
        return None
    return figures["ours"].rate / figures[versus].rate


def render(
    results: Results, *, titles: dict[str, str], headings: dict[str, str], raw_names: dict[str, str]
) -> str:
    lines: list[str] = []
    for backend, heading in headings.items():
        if backend not in results:
            continue
        lines += ["", heading, ""]
        header = (
            f"{'workload (events/s)':<42}{'eventstore':>12}{'eventsourcing':>15}{raw_names[backend]:>14}"
            f"{'ours/es':>9}{'ours/raw':>10}  target"
        )
        lines += [header, "-" * len(header)]
        for workload, title in titles.items():
            figures = results[backend].get(workload)
            if not figures:
                continue
            cells = [f"{figures[s].rate:>,.0f}" if s in figures else "-" for s in SUBJECTS]
            ratios = [ratio(results, backend, workload, v) for v in ("es", "raw")]
            shown = [f"{r:.2f}x" if r is not None else "-" for r in ratios]
            verdicts = [
                _verdict(results, t) for t in TARGETS if (t.backend, t.workload) == (backend, workload)
            ]
            lines.append(
                f"{title:<42}{cells[0]:>12}{cells[1]:>15}{cells[2]:>14}{shown[0]:>9}{shown[1]:>10}  "
                + ("; ".join(verdicts) or "-")
            )
    lines += ["", "Targets:"]
    for target in TARGETS:
        if target.backend not in headings:
            continue
        r = ratio(results, target.backend, target.workload, target.versus)
        name = f"{headings[target.backend].split(' ')[0]} {titles[target.workload]}"
        versus = "eventsourcing" if target.versus == "es" else raw_names[target.backend]
        if r is None:
            lines.append(f"  {name}: >= {target.at_least:.2f}x {versus}: not measured")
            continue
        status = "met" if r >= target.at_least else f"MISSED by {(1 - r / target.at_least) * 100:.0f}%"
        lines.append(f"  {name}: >= {target.at_least:.2f}x {versus}: {r:.2f}x, {status}")
    return "\n".join(lines)


def _verdict(results: Results, target: Target) -> str:
    r = ratio(results, target.backend, target.workload, target.versus)
    goal = f">={target.at_least:g}x {target.versus}"
    if r is None:
        return f"{goal} ?"
    return f"{goal} {'met' if r >= target.at_least else 'MISSED'}"
