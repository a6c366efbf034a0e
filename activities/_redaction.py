"""Redaction: every secret replaced by ``***`` in what an action logs, returns and raises,
before anything is stored.

A stretch of text is masked when it is one of the *forms* of a secret: the secret as
written, or its base64 (standard and URL-safe) at each of the three alignments it can have
inside a longer base64 text (a Basic ``Authorization`` header, say). It is masked too when
it *reads* as one of those forms. Reading decodes each encoded character on its own, so
encodings mix freely (``%41&#66;\\u0043`` reads ``ABC``), and repeats that up to
``READ_ROUNDS`` times (an encoding of an encoding: ``%2541``, ``&amp;#65;``, ``\\\\u0041``).
What it decodes:

- percent-encoding of UTF-8 bytes, either case (``%C3%A9``, ``%c3%a9``); a byte that starts
  no UTF-8 character reads as its Latin-1 character (``%E9``); and ``+`` reads as a space
  (so a ``+`` in a secret matches a space too);
- HTML character references: decimal or hexadecimal, leading zeros and either case
  (``&#0233;``, ``&#XE9;``), and every HTML5 name (``&eacute;``, ``&amp;``);
- backslash escapes: ``\\u00e9`` and UTF-16 pairs (``\\ud83d\\ude00``), ``\\U0001f600``,
  ``\\u{1F600}``, ``\\xe9``, UTF-8 bytes in hex or octal (``\\xc3\\xa9``, ``\\303\\251``: a
  run that is valid UTF-8 reads as UTF-8), ``\\n \\r \\t \\b \\f \\v \\0``, and a backslash
  before any ASCII punctuation or a space (``\\"``, ``\\/``, ``\\'``, ``\\\\``).

Secrets are read the same way, so a secret that holds escapes itself is matched by its
reading. Short forms would mask ordinary text: base64 forms shorter than
``MIN_FORM_LENGTH`` characters are not searched, and a reading that short is masked only
where the text was encoded (``%61%62`` for the secret ``ab``; ``ab`` itself is the secret
as written, masked always).

The text is decoded, the secrets are not turned into patterns: a secret of a few kilobytes
(a private key) costs no more than a short one, and a text without ``%``, ``&``, ``\\`` or
``+`` costs a scan or two per set of forms.
"""

from __future__ import annotations

import base64
import functools
import html.entities
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

MASK = "***"
# Base64 forms shorter than this are not searched, and readings that short only where the
# text was encoded: they would mask ordinary text.
MIN_FORM_LENGTH = 4
# How many encodings deep a reading goes.
READ_ROUNDS = 4
# From this length on, a text is searched form by form (str.find), not with one alternation.
LONG_TEXT = 4096

_HEX = "[0-9A-Fa-f]"
# One encoded character (or a run of encoded bytes, split per character later). Every
# alternative starts with a literal, so a search skips to the next %, \ or & at C speed.
_ENCODED = re.compile(
    rf"""
    %(?P<percent>{_HEX}{{2}}(?:%{_HEX}{{2}})*)
    | \\(?:
        (?P<hexbytes>x{_HEX}{{2}}(?:\\x{_HEX}{{2}})*)
        | (?P<octal>[0-3][0-7]{{2}}(?:\\[0-3][0-7]{{2}})*)
        | u(?P<high>[dD][89abAB]{_HEX}{{2}})\\u(?P<low>[dD][c-fC-F]{_HEX}{{2}})
        | u(?P<u4>{_HEX}{{4}})
        | U(?P<u8>{_HEX}{{8}})
        | u\{{0*(?P<braced>{_HEX}{{1,6}})\}}
        | (?P<control>[nrtbfv0])
        | (?P<escaped>[\x20-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e])
    )
    | &(?:
        \#0*(?P<decimal>[0-9]{{1,7}})
        | \#[xX]0*(?P<hexadecimal>{_HEX}{{1,6}})
        | (?P<name>[A-Za-z][A-Za-z0-9]{{1,31}})
    );
    """,
    re.VERBOSE,
)
# Runs of encoded bytes, by group: how to find each byte, and its digits' base.
_BYTE_RUNS = {
    "percent": (re.compile(rf"%({_HEX}{{2}})"), 16),
    "hexbytes": (re.compile(rf"\\x({_HEX}{{2}})"), 16),
    "octal": (re.compile(r"\\([0-3][0-7]{2})"), 8),
}
_CONTROLS = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
_ENTITIES = {name[:-1]: text for name, text in html.entities.html5.items() if name.endswith(";")}


def redact(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` (a string, or the strings in dicts, lists and tuples, keys included) with
    every form of every secret, and every stretch that reads as one, replaced by ``***``."""
    forms = _forms(tuple(secrets))
    return value if forms is None else _redacted(value, forms)


@functools.lru_cache(maxsize=64)
def _forms(secrets: tuple[str, ...]) -> _Forms | None:
    # Cached: a run redacts every log line with the same secrets.
    return _Forms.of(secrets)


def _redacted(value: Any, forms: _Forms) -> Any:
    if isinstance(value, str):
        return forms.mask(value)
    if isinstance(value, dict):
        return {_redacted(key, forms): _redacted(item, forms) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item, forms) for item in value]
    return value


def base64_forms(secret: str) -> set[str]:
    """The secret's base64, standard and URL-safe, at each of the three alignments it can
    have inside a longer base64 text: only the characters that depend on its bytes alone."""
    raw = secret.encode("utf-8", errors="surrogatepass")
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            encoded = encode(b"\0" * shift + raw).decode()
            start, end = -(-shift * 8 // 6), (shift + len(raw)) * 8 // 6
            forms.add(encoded[start:end])
    return forms


@dataclass(frozen=True)
class _Layer:
    """One round of decoding: the decoded text, and where each decoded piece came from."""

    text: str
    # Decoded pieces in order: start and end in ``text``, then in the text decoded.
    starts: list[int]
    pieces: list[tuple[int, int, int, int]]

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The stretch that decoded to ``text[start:end]``, widened to whole pieces."""
        return self._at(start, bisect_right(self.starts, start) - 1, end=False), self._at(
            end, bisect_left(self.starts, end) - 1, end=True
        )

    def _at(self, position: int, index: int, *, end: bool) -> int:
        if index < 0:
            return position
        start, stop, original_start, original_stop = self.pieces[index]
        if position < stop or (end and position == stop):
            return original_stop if end else original_start
        return original_stop + position - stop


@dataclass(frozen=True)
class Reading:
    """A text as read (see the module's docstring), and the way back to the text."""

    text: str
    layers: tuple[_Layer, ...]

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The stretch of the text that reads as ``text[start:end]``."""
        for layer in reversed(self.layers):
            start, end = layer.original(start, end)
        return start, end


def read(text: str) -> Reading:
    """``text`` decoded one level at a time until nothing changes (at most ``READ_ROUNDS``
    times), then with each ``+`` as a space."""
    layers: list[_Layer] = []
    for _ in range(READ_ROUNDS):
        layer = _decoded_once(layers[-1].text if layers else text)
        if layer is None:
            break
        layers.append(layer)
    decoded = layers[-1].text if layers else text
    # Same length, so positions hold.
    return Reading(decoded.replace("+", " "), tuple(layers))


def _decoded_once(text: str) -> _Layer | None:
    starts: list[int] = []
    pieces: list[tuple[int, int, int, int]] = []
    parts: list[str] = []
    size = copied = 0
    for start, stop, decoded in _decoded_pieces(text):
        if decoded == text[start:stop]:
            continue
        parts.append(text[copied:start])
        size += start - copied
        starts.append(size)
        pieces.append((size, size + len(decoded), start, stop))
        parts.append(decoded)
        size += len(decoded)
        copied = stop
    if not pieces:
        return None
    parts.append(text[copied:])
    return _Layer("".join(parts), starts, pieces)


def _decoded_pieces(text: str) -> Iterator[tuple[int, int, str]]:
    for found in _ENCODED.finditer(text):
        kind = found.lastgroup
        if kind in _BYTE_RUNS:
            yield from _characters(found, *_BYTE_RUNS[kind])
            continue
        decoded = _DECODERS[kind or ""](found)
        if decoded is not None:
            yield found.start(), found.end(), decoded


def _surrogates(found: re.Match[str]) -> str:
    high, low = int(found["high"], 16), int(found["low"], 16)
    return chr(0x10000 + ((high - 0xD800) << 10) + low - 0xDC00)


def _code_point(group: str, base: int) -> Callable[[re.Match[str]], str | None]:
    def decoded(found: re.Match[str]) -> str | None:
        code = int(found[group], base)
        return chr(code) if code <= 0x10FFFF else None

    return decoded


_DECODERS: dict[str, Callable[[re.Match[str]], str | None]] = {
    "low": _surrogates,
    "u4": _code_point("u4", 16),
    "u8": _code_point("u8", 16),
    "braced": _code_point("braced", 16),
    "decimal": _code_point("decimal", 10),
    "hexadecimal": _code_point("hexadecimal", 16),
    "control": lambda found: _CONTROLS[found["control"]],
    "escaped": lambda found: found["escaped"],
    "name": lambda found: _ENTITIES.get(found["name"]),
}


def _characters(
    run: re.Match[str], byte: re.Pattern[str], base: int
) -> Iterator[tuple[int, int, str]]:
    """A run of encoded bytes, one piece per character: UTF-8 where the bytes make one,
    else a byte's Latin-1 character."""
    found = [(m.start(), m.end(), int(m[1], base)) for m in byte.finditer(run.group())]
    offset, index = run.start(), 0
    while index < len(found):
        size = _utf8_length(found[index][2])
        try:
            decoded = bytes(value for _, _, value in found[index : index + size]).decode()
        except UnicodeDecodeError:
            decoded = ""
        if len(decoded) != 1:  # not valid UTF-8, or the run ends inside the character
            size, decoded = 1, chr(found[index][2])
        yield offset + found[index][0], offset + found[index + size - 1][1], decoded
        index += size


def _utf8_length(lead: int) -> int:
    if 0xC2 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF5:
        return 4
    return 1


@dataclass(frozen=True)
class _Forms:
    """What is searched for one set of secrets: forms as written, and forms as read."""

    written: _Search
    read: _Search
    # Readings shorter than MIN_FORM_LENGTH: masked only where the text was encoded.
    read_short: _Search
    # Readings that are not also written forms: all that a text without encodings needs.
    read_only: _Search
    # A text shorter than this holds none (reading never makes a text longer).
    shortest: int

    @classmethod
    def of(cls, secrets: Iterable[str]) -> _Forms | None:
        written: set[str] = set()
        for secret in secrets:
            if secret:
                written.add(secret)
                written |= {form for form in base64_forms(secret) if len(form) >= MIN_FORM_LENGTH}
        if not written:
            return None
        readings = {read(form).text for form in written}
        long = {reading for reading in readings if len(reading) >= MIN_FORM_LENGTH}
        return cls(
            _Search.of(written),
            _Search.of(long),
            _Search.of(readings - long),
            _Search.of(long - written),
            min(map(len, written | readings)),
        )

    def mask(self, text: str) -> str:
        if len(text) < self.shortest:
            return text
        spans = list(self.written.occurrences(text))
        if "+" in text or _ENCODED.search(text) is not None:
            reading = read(text)
            spans += (reading.original(*span) for span in self.read.occurrences(reading.text))
            for start, end in self.read_short.occurrences(reading.text):
                original_start, original_end = reading.original(start, end)
                if text[original_start:original_end] != reading.text[start:end]:
                    spans.append((original_start, original_end))
        else:  # the text reads as written
            spans += self.read_only.occurrences(text)
        return _masked(text, spans) if spans else text


@dataclass(frozen=True)
class _Search:
    """Every occurrence of any of some strings, overlapping ones included."""

    forms: tuple[str, ...]
    # Whether there is any at all, in one scan: the common answer is no.
    any: re.Pattern[str] | None

    @classmethod
    def of(cls, forms: Iterable[str]) -> _Search:
        ordered = tuple(sorted(forms, key=lambda form: (-len(form), form)))
        return cls(ordered, re.compile("|".join(map(re.escape, ordered))) if ordered else None)

    def occurrences(self, text: str) -> Iterator[tuple[int, int]]:
        # A short text is quicker to rule out with the alternation, a long one form by form.
        if self.any is None or (len(text) < LONG_TEXT and self.any.search(text) is None):
            return
        for form in self.forms:
            start = text.find(form)
            while start != -1:
                yield start, start + len(form)
                start = text.find(form, start + 1)


def _masked(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with each stretch the spans cover (merged where they touch) as ``***``."""
    parts: list[str] = []
    copied = 0
    for start, end in sorted(spans):
        if start > copied or not parts:
            parts += (text[copied:start], MASK)
        copied = max(copied, end)
    parts.append(text[copied:])
    return "".join(parts)
