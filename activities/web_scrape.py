"""The ``web_scrape`` action: fetch one HTML page and read it with CSS selectors.

``fetch_page``, ``compile_selectors``, ``extract`` and ``main_text`` are also what other
actions (``generate_report``'s url sources) use to read a page; they fail the run with an
``ActionFailure``: the shared HTTP names (``activities/_http.py``), and ``InvalidSelector``,
``NotHtml`` and ``HttpResponseTooLarge`` (over ``max_bytes``).
"""

from __future__ import annotations

import asyncio
import codecs
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx
import soupsieve
from bs4 import BeautifulSoup, CData, Tag
from bs4.element import PreformattedString

from activities._action import ActionRun
from activities._failure import ActionFailure
from activities._http import ERROR_BODY_BYTES, classified, read_capped, status_failure, where
from schema.actions import WebScrapeConfig

# With `all`, at most this many matches per selector are read.
MAX_MATCHES = 1_000
CHARSET_SNIFF_BYTES = 16_384
ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.5"
MARKUP_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
# Never page content, wherever they are.
HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
# Page furniture, left out of a page's main text.
FURNITURE = HIDDEN | {"nav", "header", "footer"}
BLOCKS = frozenset(
    "address article aside blockquote br dd details dialog div dl dt fieldset figcaption figure "
    "form h1 h2 h3 h4 h5 h6 hr li main ol p pre section summary table td th tr ul".split()
)
URL_ATTRIBUTES = frozenset({"href", "src"})
XML_DECLARATION = re.compile(r"^\s*<\?xml\b[^>]*>", re.I)
XML_ENCODING = re.compile(rb"""^\s*<\?xml\b[^>]*?encoding\s*=\s*["']([a-z0-9_.:-]+)""", re.I)
META_CHARSET = re.compile(rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([a-z0-9_.:-]+)""", re.I)
BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (b"\xfe\xff", "utf-16"))


@dataclass
class Page:
    """A fetched page: final URL after redirects, status, and its parsed HTML."""

    url: str
    status_code: int
    charset: str
    soup: BeautifulSoup = field(repr=False)

    @property
    def title(self) -> str | None:
        """The page's <title>, whitespace-normalised, or None."""
        title = self.soup.title
        text = _normalised(title.get_text()) if title is not None else ""
        return text or None


async def scrape(run: ActionRun, config: WebScrapeConfig) -> dict[str, Any]:
    """Fetch the page; return its title and each selector's text or attribute (or main text)."""
    selectors = compile_selectors(config.selectors)
    page = await fetch_page(
        run,
        config.url,
        headers=config.headers,
        timeout_seconds=config.timeout_seconds,
        max_bytes=config.max_bytes,
    )
    data, text = await asyncio.to_thread(_read, page, selectors, config)
    if selectors:
        unmatched = sum(value in (None, []) for value in data.values())
        run.log(f"read {len(selectors)} selectors, {unmatched} without a match")
    return {
        "url": page.url,
        "status_code": page.status_code,
        "title": page.title,
        "data": data,
        "text": text,
    }


def _read(
    page: Page, selectors: dict[str, soupsieve.SoupSieve], config: WebScrapeConfig
) -> tuple[dict[str, Any], str | None]:
    if not selectors:
        return {}, main_text(page)
    data = extract(page, selectors, attributes=config.attributes, every=config.all)
    return data, None


def compile_selectors(selectors: Mapping[str, str]) -> dict[str, soupsieve.SoupSieve]:
    """Each named CSS selector compiled; an invalid one raises ``InvalidSelector``."""
    compiled = {}
    for name, css in selectors.items():
        try:
            compiled[name] = soupsieve.compile(css)
        except soupsieve.SelectorSyntaxError as error:
            reason = str(error).splitlines()[0]
            raise ActionFailure(
                "InvalidSelector", f"selector {name!r} ({css!r}): {reason}", retryable=False
            ) from None
    return compiled


async def fetch_page(
    run: ActionRun,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_seconds: float = 30,
    max_bytes: int = 2_000_000,
) -> Page:
    """GET ``url`` through the network guard, following redirects, and parse it as HTML.

    ``timeout_seconds`` bounds the whole fetch; a body over ``max_bytes`` (after content
    decoding) is refused while streaming, not truncated. Raises ``ActionFailure``.
    """
    run.log(f"GET {url}")
    with classified(f"GET {where(url)}", timeout_seconds):
        async with asyncio.timeout(timeout_seconds):
            response, body = await _get(run.deps.http, url, headers, timeout_seconds, max_bytes)
    charset = _charset(response, body)
    run.log(f"HTTP {response.status_code} from {response.url}, {len(body)} bytes, {charset}")
    html = body.decode(charset, errors="replace")
    soup = await asyncio.to_thread(_parse, html)
    return Page(url=str(response.url), status_code=response.status_code, charset=charset, soup=soup)


async def _get(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str] | None,
    timeout_seconds: float,
    max_bytes: int,
) -> tuple[httpx.Response, bytes]:
    # Names are ASCII tokens (checked with the config); values may be any text.
    sent = {"Accept": ACCEPT, **(headers or {})}
    request = client.build_request(
        "GET",
        url,
        headers={name.encode(): value.encode() for name, value in sent.items()},
        timeout=timeout_seconds,
    )
    response = await client.send(request, stream=True)
    try:
        if not response.is_success:
            error_body, _ = await read_capped(response, ERROR_BODY_BYTES)
            raise status_failure(response, error_body)
        _check_response(response, max_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise ActionFailure(
                    "HttpResponseTooLarge",
                    f"the page is larger than max_bytes ({max_bytes}); stopped reading",
                    retryable=False,
                )
            chunks.append(chunk)
    finally:
        await response.aclose()
    return response, b"".join(chunks)


def _check_response(response: httpx.Response, max_bytes: int) -> None:
    """Refuse non-markup content and declared oversize before the body."""
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and not (media_type in MARKUP_TYPES or media_type.endswith("+xml")):
        raise ActionFailure(
            "NotHtml",
            f"{response.url} is {media_type}, not HTML (the webhook action fetches other content)",
            retryable=False,
        )
    length = response.headers.get("content-length", "")
    # Compressed bodies only have their decoded size checked, while streaming.
    if length.isdigit() and int(length) > max_bytes and "content-encoding" not in response.headers:
        raise ActionFailure(
            "HttpResponseTooLarge",
            f"the page declares {length} bytes, more than max_bytes ({max_bytes})",
            retryable=False,
        )


def _charset(response: httpx.Response, body: bytes) -> str:
    """A byte-order mark, else the Content-Type charset, else an XML declaration's or a
    <meta> one, else UTF-8."""
    for bom, name in BOMS:
        if body.startswith(bom):
            return name
    declared = [response.charset_encoding]
    head = body[:CHARSET_SNIFF_BYTES]
    for pattern in (XML_ENCODING, META_CHARSET):
        declared += [m.decode("ascii") for m in pattern.findall(head)[:1]]
    for label in declared:
        if not label:
            continue
        try:
            name = codecs.lookup(label).name
        except LookupError:
            continue
        # As browsers do: latin-1 and ASCII labels mean windows-1252 (curly quotes, the euro).
        if name in ("iso8859-1", "ascii"):
            return "cp1252"
        # A UTF-16 label without a BOM (or in an ASCII-readable <meta>) cannot be right.
        return "utf-8" if name.startswith("utf-16") else name
    return "utf-8"


def _parse(html: str) -> BeautifulSoup:
    """The page's tree from Python's own HTML parser (feeds and XHTML included)."""
    # bs4 warns about an XML declaration (the text is decoded already, so it says nothing)
    # and about short markup without a newline (it suspects a file name); both are pages here.
    html = XML_DECLARATION.sub("", html, count=1)
    if len(html) <= 256:
        html += "\n"
    return BeautifulSoup(html, "html.parser")


def extract(
    page: Page,
    selectors: Mapping[str, soupsieve.SoupSieve | str],
    *,
    attributes: Mapping[str, str] | None = None,
    every: bool = False,
) -> dict[str, Any]:
    """Per selector name: the first match's text (or attribute), None without a match; with
    ``every``, every match's (at most MAX_MATCHES). CPU-bound on big pages: run it in a thread."""
    attributes = attributes or {}
    data: dict[str, Any] = {}
    for name, selector in selectors.items():
        compiled = (
            selector if isinstance(selector, soupsieve.SoupSieve) else _compile(name, selector)
        )
        attribute = attributes.get(name)
        if every:
            matches = compiled.select(page.soup, limit=MAX_MATCHES)
            data[name] = [_value(page, tag, attribute) for tag in matches]
        else:
            match = compiled.select_one(page.soup)
            data[name] = None if match is None else _value(page, match, attribute)
    return data


def _compile(name: str, css: str) -> soupsieve.SoupSieve:
    return compile_selectors({name: css})[name]


def _value(page: Page, tag: Tag, attribute: str | None) -> str | None:
    if attribute is None:
        pieces = (" " if piece is None else piece for piece in _strings(tag, skip=HIDDEN))
        return _normalised("".join(pieces))
    value = tag.get(attribute)
    if value is None:
        return None
    text = value if isinstance(value, str) else " ".join(value)
    if attribute.lower() in URL_ATTRIBUTES:
        text = urljoin(_base_url(page), text.strip())
    return text


def _base_url(page: Page) -> str:
    base = page.soup.find("base", href=True)
    href = base.get("href") if isinstance(base, Tag) else None
    return urljoin(page.url, href) if isinstance(href, str) else page.url


def main_text(page: Page, *, max_chars: int | None = None) -> str:
    """The body's text without scripts, styles, nav, header and footer: one line per block,
    whitespace collapsed, at most ``max_chars`` (all of it by default: the result's size is
    bounded by the runtime). CPU-bound on big pages: run it in a thread."""
    lines: list[str] = []
    line: list[str] = []
    size = 0
    for piece in _strings(page.soup.body or page.soup, skip=FURNITURE):
        if piece is not None:
            line.append(piece)
            continue
        text = _normalised("".join(line))
        line = []
        if text:
            lines.append(text)
            size += len(text) + 1
            if max_chars is not None and size > max_chars:
                break
    else:
        lines.append(_normalised("".join(line)))
    return "\n".join(text for text in lines if text)[:max_chars]


def _strings(root: Tag, *, skip: frozenset[str]) -> Iterator[str | None]:
    """The text under ``root``, with None for a break around each block element; iterative,
    as pages can nest deeper than Python's recursion limit."""
    stack: list[tuple[Iterator[Any], bool]] = [(iter(root.contents), False)]
    while stack:
        children, block = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if block:
                yield None
        elif isinstance(child, Tag):
            if child.name not in skip:
                is_block = child.name in BLOCKS
                if is_block:
                    yield None
                stack.append((iter(child.contents), is_block))
        # Comments, doctypes and processing instructions are not text; CDATA is.
        elif isinstance(child, str) and (
            isinstance(child, CData) or not isinstance(child, PreformattedString)
        ):
            yield str(child)


def _normalised(text: str) -> str:
    return " ".join(text.split())
