"""What a fault run broke, as sentences and as a table row."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatstack.chaos.chats import Chat
from chatstack.chaos.faults import Fault

SETTLE_S = 30.0  # every chat must end in a frame this long after the fault
HEAL_LIMIT_S = 30.0  # a new chat must succeed this long after the fault
SILENCE_S = 10.0  # a new sendMessage must get its ack or an error this soon, even during the fault
OBSERVE_HEAL_S = 40.0  # how long the heal probe keeps trying, to report a figure past the limit


@dataclass
class FaultResult:
    fault: Fault
    chats: list[Chat]
    streaming: int  # chats mid-stream when the fault hit
    hit: list[str]
    last_frame_s: float | None  # fault -> the last done/error (or close), None if any chat hung
    heal_s: float | None  # fault -> the first new chat that succeeded, None if none within OBSERVE_HEAL_S
    probe_failures: list[str] = field(default_factory=list)  # how the new chats before it failed
    silent_sends: int = 0  # new sendMessages that got neither ack nor error within SILENCE_S
    notes: list[str] = field(default_factory=list)  # what else the run found out (restart time, ...)

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.chats if c.outcome == outcome)

    @property
    def answered(self) -> int:
        return sum(1 for c in self.chats if c.answered_by and c.stored_answers > 0)

    @property
    def failed(self) -> int:
        """No answer, but the client was told so: the last re-send ended in an error frame."""
        return sum(1 for c in self.chats if not (c.answered_by and c.stored_answers > 0) and c.final_error)

    @property
    def lost(self) -> int:
        return len(self.chats) - self.answered - self.failed

    @property
    def duplicated(self) -> int:
        return sum(
            1 for c in self.chats if c.stored_users > 1 or c.stored_answers > 1 or len(c.conversations) > 1
        )

    @property
    def mismatched(self) -> int:
        return sum(1 for c in self.chats if c.stored_text and any(t != c.stored_text for t in c.streamed))

    def problems(self) -> list[str]:
        """What broke a promise, one sentence each; empty when the fault was survived."""
        n, out = len(self.chats), []
        if self.count("hung"):
            out.append(
                f"{self.count('hung')} of {n} chats got neither done nor error within {SETTLE_S:.0f} s."
            )
        if self.count("closed") and not self.fault.connections_close:
            out.append(f"{self.count('closed')} of {n} connections closed without a done or error frame.")
        if self.count("error") and not self.fault.errors_allowed:
            codes = sorted({code for c in self.chats for code in c.codes})
            out.append(f"{self.count('error')} of {n} chats ended in error ({', '.join(codes)}).")
        if self.lost:
            out.append(f"{self.lost} of {n} requestIds reached no stored answer by resume or re-send.")
        if self.failed:  # docs/protocol.md: re-sending a failed answer retries it
            out.append(f"{self.failed} of {n} requestIds were given up with an error instead of answered.")
        if self.duplicated:
            out.append(f"{self.duplicated} of {n} requestIds were stored twice.")
        if self.mismatched:
            out.append(f"{self.mismatched} of {n} streamed answers differ from the stored answer.")
        if self.silent_sends:
            out.append(
                f"{self.silent_sends} new sendMessages got neither ack nor error within {SILENCE_S:.0f} s."
            )
        if self.heal_s is None or self.heal_s > HEAL_LIMIT_S:
            out.append(f"No new chat succeeded within {HEAL_LIMIT_S:.0f} s of the fault.")
        return out

    def details(self, limit: int = 100) -> list[str]:
        """What the failed chats and probes saw, one line each (for a person reading a failure)."""
        lines = [f"{self.fault.name} ({self.fault.summary}); hit: {', '.join(self.hit)}"]
        for chat in [c for c in self.chats if c.outcome != "done" or not c.answered_by][:limit]:
            lines.append(
                f"  chat {chat.index} {chat.request_id}: {chat.outcome}; answered by "
                f"{chat.answered_by or '-'}; stored user/answer {chat.stored_users}/{chat.stored_answers}; "
                + "; ".join(chat.notes[-4:])
            )
        for chat in self.chats:
            for index, text in enumerate(chat.streamed):
                if chat.stored_text and text != chat.stored_text:
                    seqs = chat.seqs[index] if index < len(chat.seqs) else []
                    lines.append(
                        f"  chat {chat.index} {chat.request_id}: {_difference(text, chat.stored_text)}"
                        + (f"; seqs as they arrived (-n: restart): {_runs(seqs)}" if seqs else "")
                    )
        if self.probe_failures:
            lines.append(f"  new chats before healing: {'; '.join(self.probe_failures[-4:])}")
        lines += [f"  {note}" for note in self.notes]
        return lines

    def row(self) -> list[str]:
        def seconds(value: float | None, limit: float) -> str:
            return f">{limit:.0f}" if value is None else f"{value:.1f}"

        return [
            self.fault.name,
            str(len(self.chats)),
            "-" if self.fault.twins else str(self.streaming),
            str(self.count("done")),
            str(self.count("error")),
            str(self.count("closed")),
            str(self.count("hung")),
            str(self.answered),
            str(self.failed),
            str(self.lost),
            str(self.duplicated),
            seconds(self.last_frame_s, SETTLE_S),
            seconds(self.heal_s, OBSERVE_HEAL_S),
            "pass" if not self.problems() else "FAIL",
        ]


HEADER = [
    "fault", "chats", "mid-stream", "done", "error", "closed", "hung",
    "answered", "failed", "lost", "duplicated", "last frame (s)", "heal (s)", "verdict",
]  # fmt: skip


def table(results: list[FaultResult]) -> str:
    """A Markdown table, one row per fault."""
    rows = [HEADER, ["---"] * len(HEADER), *(r.row() for r in results)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _difference(streamed: str, stored: str) -> str:
    """Where a streamed answer departs from the stored one, in a line."""
    at = next((i for i, (a, b) in enumerate(zip(streamed, stored, strict=False)) if a != b), None)
    at = min(len(streamed), len(stored)) if at is None else at
    return (
        f"streamed {len(streamed)} characters, stored {len(stored)}; they part at {at}: "
        f"streamed {streamed[max(0, at - 20) : at + 30]!r}, stored {stored[max(0, at - 20) : at + 30]!r}"
    )


def _runs(seqs: list[int]) -> str:
    """1,2,3,7,8 -> '1-3 7-8': the gaps and repeats of a stream at a glance."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][-1] + 1 and seq > 0:
            runs[-1].append(seq)
        else:
            runs.append([seq])
    return " ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
