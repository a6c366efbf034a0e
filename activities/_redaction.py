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
- HTML character references: decimal or hexadecimal, leading zeros and either case, with
  or without the closing ``;`` (``&#0233;``, ``&#XE9;``, ``&#233``: as HTML reads them,
  each takes every digit that follows, up to 7 decimal or 6 hexadecimal ones), and every
  HTML5 name with its ``;`` (``&eacute;``, ``&amp;``);
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
``+`` costs a scan or two per form. Decoding costs about a microsecond per encoded
character, so a caller that keeps only the beginning of a long text cuts it first and
redacts the beginning with ``Redactor.redact_beginning``, which masks what crosses the cut.

The forms of a set of secrets are found once per ``Redactor``: an action attempt keeps one
and drops it with the attempt. Nothing here keeps a secret beyond that (no cache, and no
regular expression built from a secret, which ``re`` would cache for the process).
"""

from __future__ import annotations

import base64
import html.entities
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

MASK = "***"
# Base64 forms shorter than this are not searched, and readings that short only where the
# text was encoded: they would mask ordinary text.
MIN_FORM_LENGTH = 4
# How many encodings deep a reading goes.
READ_ROUNDS = 4
# How far before the end of a cut text a round of decoding may read otherwise than it would
# read the whole text: further than any encoded character but one padded with zeros.
UNSURE_CHARS = 64

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
        \#0*(?P<decimal>[0-9]{{1,7}});?
        | \#[xX]0*(?P<hexadecimal>{_HEX}{{1,6}});?
        | (?P<name>[A-Za-z][A-Za-z0-9]{{1,31}});
    )
    """,
    re.VERBOSE,
)
# What a cut may leave of an encoded character padded with zeros, the one kind that can be
# longer than UNSURE_CHARS: from its start, nothing after it is sure.
_OPEN = re.compile(rf"&\#[xX]?0*{_HEX}{{0,7}}|\\u\{{0*{_HEX}{{0,6}}")
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
    return Redactor(secrets).redact(value)


class Redactor:
    """Redaction of one set of secrets, their forms found once."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(secrets)
        self._forms = _Forms.of(self.secrets)

    def redact(self, value: Any) -> Any:
        """``value`` (a string, or the strings in dicts, lists and tuples, keys included)
        with every form of every secret, and every stretch that reads as one, as ``***``."""
        return value if self._forms is None else _redacted(value, self._forms.mask)

    def redact_beginning(self, text: str) -> str:
        """``text``, the beginning of a longer text that was cut off, redacted, and cut
        again: before what could read otherwise than in the whole text (the last
        ``UNSURE_CHARS`` characters of each round of decoding, or an unfinished character
        padded with zeros), less what reads as the longest form but one character. So no
        part of a secret that crosses the cut is left."""
        return text if self._forms is None else self._forms.mask_beginning(text)

    def redact_cut(self, cut: Any, whole: Any) -> Any:
        """``cut``, a copy of ``whole`` with strings cut short and members or items left
        out (as ``activities/_results.py`` cuts a result), redacted: each string shorter
        than in ``whole`` as a beginning (``redact_beginning``), the rest as a whole."""
        forms = self._forms
        if forms is None:
            return cut
        if isinstance(cut, str):
            whole_text = isinstance(whole, str) and len(whole) == len(cut)
            return forms.mask(cut) if whole_text else forms.mask_beginning(cut)
        if isinstance(cut, dict):
            wholes = whole if isinstance(whole, dict) else {}
            return {
                _redacted(key, forms.mask): self.redact_cut(item, wholes.get(key, item))
                for key, item in cut.items()
            }
        if isinstance(cut, list | tuple):
            items = list(whole) if isinstance(whole, list | tuple) else []
            return [
                self.redact_cut(item, items[index] if index < len(items) else item)
                for index, item in enumerate(cut)
            ]
        return cut


def _redacted(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {_redacted(key, mask): _redacted(item, mask) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item, mask) for item in value]
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

    def decoded(self, position: int) -> int:
        """Where the decoding of the text decoded up to ``position`` ends in ``text``,
        without the piece ``position`` cuts through, if any."""
        index = bisect_right(self.pieces, position, key=itemgetter(2)) - 1
        if index < 0:
            return position
        start, stop, _, original_stop = self.pieces[index]
        return start if position < original_stop else stop + position - original_stop

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
    # How much of ``text`` reads as the text would if it went on (all of it, unless the
    # text was read as the beginning of a longer one).
    sure: int

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The stretch of the text that reads as ``text[start:end]``."""
        for layer in reversed(self.layers):
            start, end = layer.original(start, end)
        return start, end


def read(text: str, *, beginning: bool = False) -> Reading:
    """``text`` decoded one level at a time until nothing changes (at most ``READ_ROUNDS``
    times), then with each ``+`` as a space. ``beginning``: the text is the beginning of a
    longer one, and the reading says how much of it is sure (``Reading.sure``)."""
    layers: list[_Layer] = []
    current, sure, done = text, len(text), False
    for _ in range(READ_ROUNDS):
        layer = None if done else _decoded_once(current)
        if beginning:  # every round, decoding or not: the text cut off might decode
            sure = _sure(current, sure, layer)
        if layer is None:
            if not beginning:
                break
            done = True
            continue
        layers.append(layer)
        current = layer.text
    # Same length, so positions hold.
    return Reading(current.replace("+", " "), tuple(layers), sure)


def _sure(text: str, sure: int, layer: _Layer | None) -> int:
    """How much of a round's output is sure, when ``text[:sure]`` (its input) is: its last
    ``UNSURE_CHARS`` characters (and an encoded character padded with zeros that reaches
    them) could be the start of an encoded character the cut left unfinished."""
    end = max(0, sure - UNSURE_CHARS)
    start = max(text.rfind("&", 0, sure), text.rfind("\\", 0, sure))
    if 0 <= start < end and _OPEN.fullmatch(text, start, sure):
        end = start
    return end if layer is None else layer.decoded(end)


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
    # The longest form, written or read: a cut can leave at most this less one of it.
    longest: int

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
        lengths = list(map(len, written | readings))
        return cls(
            _Search.of(written),
            _Search.of(long),
            _Search.of(readings - long),
            _Search.of(long - written),
            min(lengths),
            max(lengths),
        )

    def mask(self, text: str) -> str:
        if len(text) < self.shortest:
            return text
        encoded = "+" in text or _ENCODED.search(text) is not None
        spans = self._spans(text, read(text) if encoded else None)
        return _masked(text, spans) if spans else text

    def mask_beginning(self, text: str) -> str:
        reading = read(text, beginning=True)
        # What a secret crossing the cut can have left: less than a form, read or written.
        cut = max(0, reading.sure - self.longest + 1)
        keep = max(0, min(reading.original(cut, cut)[0], len(text) - self.longest + 1))
        spans = [(start, min(end, keep)) for start, end in self._spans(text, reading)]
        return _masked(text[:keep], [(start, end) for start, end in spans if start < keep])

    def _spans(self, text: str, reading: Reading | None) -> list[tuple[int, int]]:
        spans = list(self.written.occurrences(text))
        if reading is None:  # the text reads as written
            spans += self.read_only.occurrences(text)
            return spans
        spans += (reading.original(*span) for span in self.read.occurrences(reading.text))
        for start, end in self.read_short.occurrences(reading.text):
            original_start, original_end = reading.original(start, end)
            if text[original_start:original_end] != reading.text[start:end]:
                spans.append((original_start, original_end))
        return spans


@dataclass(frozen=True)
class _Search:
    """Every occurrence of any of some strings, overlapping ones included: one ``find`` per
    string (a regular expression of them would be cached by ``re``, secrets and all)."""

    forms: tuple[str, ...]

    @classmethod
    def of(cls, forms: Iterable[str]) -> _Search:
        return cls(tuple(sorted(forms, key=lambda form: (-len(form), form))))

    def occurrences(self, text: str) -> Iterator[tuple[int, int]]:
        for form in self.forms:
            # A long form costs ``find`` its length before it looks: its start first.
            if form[:16] not in text:
                continue
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
