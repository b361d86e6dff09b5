"""What a takeover generation shows a client that already saw part of an answer (no I/O).

When a worker dies mid-answer, another worker generates the answer again. The client already holds the
text the first attempt streamed. While the new text agrees with it, only what goes beyond it is sent,
so a deterministic model continues seamlessly; where it disagrees, the client's text is replaced (a
delta with `restart`), never silently spliced.
"""

from __future__ import annotations


class Continuation:
    def __init__(self, streamed: str = "") -> None:
        self.streamed = streamed
        self.pending = bool(streamed)  # still inside text the client already has
        self.restart = False  # the next delta replaces the client's text

    def visible(self, so_far: str, piece: str) -> str:
        """Of `piece` (the newest end of `so_far`, the new attempt's text), what the client must get."""
        if not self.pending:
            return piece
        if len(so_far) <= len(self.streamed):
            if self.streamed.startswith(so_far):
                return ""
        elif so_far.startswith(self.streamed):
            self.pending = False
            return so_far[len(self.streamed) :]
        self.pending, self.restart = False, True
        return so_far

    def finish(self, final: str) -> str | None:
        """At the end: the whole text to send with `restart` when the new answer is shorter than what
        the client already shows; else None."""
        if self.pending and final != self.streamed:
            self.pending, self.restart = False, True
            return final
        return None
