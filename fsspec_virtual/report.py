"""How each variable of a store is served: passed through, held inline, or left out, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .manifest import COMPUTED, INLINE, MISSING, Manifest
from .options import redacted_text
from .scan import ScanCost

__all__ = ["VariableReport", "ScanReport", "describe"]


@dataclass(frozen=True, slots=True)
class VariableReport:
    """How one variable is served.

    Attributes
    ----------
    path
        The variable's path in the store.
    how
        ``"passthrough"`` (byte ranges of the source files), ``"inline"`` (bytes held in
        memory), ``"mixed"`` (some of each), ``"computed"`` (some or all chunks
        assembled on request), ``"empty"`` (no chunk written: all fill) or ``"skipped"``
        (left out of the store).
    chunks
        Chunks by kind: ``{"passthrough": n, "inline": n, "computed": n, "missing": n}``.
    reason
        Why a variable is computed or skipped, else ``""`` (credentials in it redacted).
    """

    path: str
    how: str
    chunks: dict[str, int]
    reason: str = ""

    def __post_init__(self) -> None:
        # reasons quote source URLs, which may carry a password
        object.__setattr__(self, "reason", redacted_text(self.reason))


@dataclass(frozen=True, slots=True)
class ScanReport:
    """The per-variable report of a store; ``str()`` gives a table."""

    files: int
    variables: tuple[VariableReport, ...]
    #: Remote files scanned for the current state (not reused from a cache), and the
    #: read requests and bytes their scans took.
    remote_scans: int = 0
    scan_cost: ScanCost = field(default_factory=ScanCost)

    @property
    def requests_per_file(self) -> float:
        """Read requests per remote file scanned (0 when none was)."""
        return self.scan_cost.requests / self.remote_scans if self.remote_scans else 0.0

    @property
    def left_out(self) -> tuple[VariableReport, ...]:
        """The variables left out of the store (with why)."""
        return tuple(v for v in self.variables if v.how == "skipped")

    def _repr_html_(self) -> str:
        """The report as an HTML table (Jupyter shows it)."""
        import html

        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(redacted_text(str(cell)))}</td>"
                for cell in (
                    v.path,
                    v.how,
                    ", ".join(f"{n} {kind}" for kind, n in v.chunks.items() if n),
                    v.reason,
                )
            )
            + "</tr>"
            for v in self.variables
        )
        head = html.escape(self._headline())
        return (
            f"<p>{head}</p><table><thead><tr><th>variable</th><th>served</th>"
            f"<th>chunks</th><th>why</th></tr></thead><tbody>{rows}</tbody></table>"
        )

    def _headline(self) -> str:
        served = len(self.variables) - len(self.left_out)
        left = f", {len(self.left_out)} left out" if self.left_out else ""
        return f"{served} variables served from {self.files} file(s){left}"

    def __str__(self) -> str:
        width = max([len(v.path) for v in self.variables] + [8])
        lines = [self._headline()]
        if self.remote_scans:
            lines.append(
                f"scanned {self.remote_scans} remote file(s): {self.scan_cost.requests} "
                f"requests ({self.requests_per_file:.1f} per file), "
                f"{self.scan_cost.bytes} bytes"
            )
        for v in self.variables:
            counts = ", ".join(f"{n} {kind}" for kind, n in v.chunks.items() if n)
            detail = f" ({counts})" if counts else ""
            why = f": {v.reason}" if v.reason else ""
            lines.append(f"  {v.path:<{width}}  {v.how}{detail}{why}")
        return redacted_text("\n".join(lines))


def describe(
    manifest: Manifest, files: int, scan_cost: tuple[int, ScanCost] = (0, ScanCost())
) -> ScanReport:
    """The report of a combined manifest (and of the remote scans that made it)."""
    variables = []
    for path, array in sorted(manifest.arrays.items()):
        fid = array.grid.file_id
        counts = {
            "passthrough": int(np.count_nonzero(fid >= 0)),
            "inline": int(np.count_nonzero(fid == INLINE)),
            "computed": int(np.count_nonzero(fid == COMPUTED)),
            "missing": int(np.count_nonzero(fid == MISSING)),
        }
        if counts["computed"] or array.plan is not None:
            how = "computed"
        elif counts["passthrough"] and counts["inline"]:
            how = "mixed"
        elif counts["passthrough"]:
            how = "passthrough"
        elif counts["inline"]:
            how = "inline"
        else:
            how = "empty"
        reason = array.plan.reason if array.plan is not None else ""
        variables.append(VariableReport(path, how, counts, reason))
    for path, reason in sorted(manifest.skipped.items()):
        variables.append(VariableReport(path, "skipped", {}, reason))
    return ScanReport(files, tuple(variables), scan_cost[0], scan_cost[1])
