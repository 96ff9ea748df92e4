"""What a task prints, made safe for the rich display: its colours stay, nothing else acts.

A task's output is the task's to choose, and a terminal obeys more than colours: `ESC c`
resets it, an OSC sequence sets its title or the clipboard, OSC 8 makes text a link to any
URL, and C1 controls (8-bit CSI, U+009B) start the same sequences in one character. The rich
display keeps SGR sequences (colours and styles: rich parses them) and drops every other
escape sequence and control character. The plain output does not come here: it passes the
task's bytes through unchanged, as make does.
"""

from __future__ import annotations

import re

__all__ = ["terminal_safe"]

_SEQUENCES = re.compile(
    r"(?P<sgr>\x1b\[[0-9;:]*m)"               # colours and styles: kept
    r"|\x1b\[[0-?]*[ -/]*[@-~]?"              # any other CSI: cursor, erase, modes...
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"    # OSC: title, clipboard, OSC 8 links
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"         # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"                      # the rest: ESC c (reset), ESC 7, charsets
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")        # C0 but tab and newline, DEL, C1 (8-bit CSI)


def terminal_safe(text: str) -> str:
    """text with its SGR sequences kept and every other escape sequence and control removed."""
    return _SEQUENCES.sub(lambda match: match.group("sgr") or "", text)
