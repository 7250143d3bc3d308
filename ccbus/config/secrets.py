"""Named secrets: references instead of values in what is stored, masks in what is shown.

A secret reaches an action's parameters in two ways: ``secret("name")`` in a
rule (a value of the config's ``secrets:``, itself often a
``${credential:NAME}``), or a value the config expanded from a credential
or a long environment variable.  Either way the value is known by name to
the :class:`SecretBook`, and that is what keeps it out of storage:

* :meth:`SecretBook.seal` turns the parameters of a call into a document
  where every occurrence of a secret, in any of the encodings it takes on
  the way (raw, JSON-escaped, percent-encoded as in a URL path, query or
  user-info, base64), is a placeholder such as ``${secret:crm-token}`` or
  ``${credential:crm-hmac|pct}``, plus a list of *references*: which
  string (a path into the parameters), at which offset, which secret, in
  which encoding.  The outbox row, the dead letter and the trace hold
  that, never the value.
* :meth:`SecretBook.unseal` puts the values back from the book of the
  running process just before the call is sent, so after a restart a
  rotated credential is used by the calls still waiting, and a secret that
  is no longer configured makes the call a dead letter instead of sending
  a placeholder.  Only the recorded
  offsets are replaced: text an event put into the parameters that merely
  looks like a placeholder stays text and cannot pull another secret out.
* :meth:`SecretBook.redact` masks every known value, in every one of those
  encodings, in text about to leave the process (logs, traces, the live
  view, errors), and also a base64 token that decodes to text containing a
  secret (``Authorization: Basic base64(user:password)``, where the user
  part is not known in advance).

Rows written before references existed carry plain values and no
references: they unseal to themselves and still send.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any
from urllib.parse import quote, quote_plus, unquote

__all__ = ["MASK", "SecretBook", "UnknownSecret", "encodings"]

MASK = "***"

#: Characters left unescaped by the percent-encoders a secret meets: none
#: (``quote(v, safe="")``), a path (``/``), yarl's path and user-info
#: quoting (sub-delimiters, ``:`` and ``@``), and a query value (``?/:@``).
_SAFE_SETS = ("", "/", "/:@", "/:@!$&'()*+,;=", ":@!$&'()*+,;=", "?/:@")


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def _percent(value: str, *, safe: str, plus: bool, lower: bool) -> str:
    text = quote_plus(value, safe=safe) if plus else quote(value, safe=safe)
    return _lower_hex(text) if lower else text


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def _b64url(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii").rstrip("=")


def _encoders() -> dict[str, Callable[[str], str]]:
    table: dict[str, Callable[[str], str]] = {
        "raw": lambda v: v,
        "json": lambda v: json.dumps(v)[1:-1],
        "json-utf8": lambda v: json.dumps(v, ensure_ascii=False)[1:-1],
    }
    for number, safe in enumerate(_SAFE_SETS):
        table[f"pct{number}"] = partial(_percent, safe=safe, plus=False, lower=False)
        table[f"pct{number}l"] = partial(_percent, safe=safe, plus=False, lower=True)
        table[f"plus{number}"] = partial(_percent, safe=safe, plus=True, lower=False)
        table[f"plus{number}l"] = partial(_percent, safe=safe, plus=True, lower=True)
    table["b64"] = _b64
    table["b64url"] = _b64url
    return table


#: Every encoding a secret is looked for in, by label (the label is part of a placeholder).
ENCODERS = _encoders()

#: A reference's placeholder: ``${secret:crm-token}``, ``${credential:crm-hmac|pct0}``.
_PLACEHOLDER = "${{{name}{suffix}}}"
#: A run of base64 long enough to hide ``user:password``: decoded and checked by redact().
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")


def encodings(value: str) -> dict[str, str]:
    """The distinct forms ``value`` takes in URLs, JSON and base64, by label (raw first)."""
    forms: dict[str, str] = {}
    seen: set[str] = set()
    for label, encode in ENCODERS.items():
        form = encode(value)
        if form and form not in seen:
            seen.add(form)
            forms[label] = form
    return forms


class UnknownSecret(LookupError):
    """A stored reference names a secret the configuration no longer has."""


def _placeholder(name: str, label: str) -> str:
    return _PLACEHOLDER.format(name=name, suffix="" if label == "raw" else f"|{label}")


class SecretBook:
    """Secret values by reference name (``secret:NAME``, ``credential:NAME``, ``env:NAME``).

    ``add`` keeps every value ever given (so one a previous config used stays
    masked) while a name always resolves to its latest value.  Values with
    no name (a short-lived expansion) are masked but never referenced.
    """

    def __init__(
        self, named: Mapping[str, str] | None = None, anonymous: Iterable[str] = ()
    ) -> None:
        self.named: dict[str, str] = {}
        self._values: set[str] = set()
        #: (form, reference name, encoding label), longest form first.
        self._forms: list[tuple[str, str | None, str]] = []
        self._pattern: re.Pattern[str] | None = None
        self._by_form: dict[str, tuple[str | None, str]] = {}
        self.add(named or {}, anonymous)

    def __bool__(self) -> bool:
        return bool(self._values)

    @property
    def values(self) -> list[str]:
        """The known values, longest first."""
        return sorted(self._values, key=len, reverse=True)

    def add(self, named: Mapping[str, str], anonymous: Iterable[str] = ()) -> None:
        """Know these secrets too: ``named`` by reference name, ``anonymous`` only to mask."""
        for name, value in named.items():
            if value:
                self.named[name] = value
                self._values.add(value)
        self._values.update(v for v in anonymous if v)
        by_value = {v: n for n, v in self.named.items()}
        forms: dict[str, tuple[str | None, str]] = {}
        for value in self._values:
            for label, form in encodings(value).items():
                forms.setdefault(form, (by_value.get(value), label))
        self._by_form = forms
        self._forms = sorted(
            ((f, n, lab) for f, (n, lab) in forms.items()), key=lambda t: len(t[0]), reverse=True
        )
        self._pattern = (
            re.compile("|".join(re.escape(f) for f, _, _ in self._forms)) if forms else None
        )

    # -- masking ----------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every known value, in every encoding, replaced by ``***``."""
        if self._pattern is None:
            return text
        if self._pattern.search(text) is not None:
            text = self._pattern.sub(MASK, text)
        if len(text) >= 8:
            text = _BASE64_RUN.sub(self._hidden_base64, text)
        return text

    def _hidden_base64(self, match: re.Match[str]) -> str:
        """A base64 token whose decoded text holds a secret (``Basic base64(user:pw)``)."""
        token = match.group(0)
        decoded = _decode_base64(token)
        if decoded is not None and self._pattern is not None:
            if self._pattern.search(decoded) is not None:
                return MASK
        return token

    def contains(self, text: str) -> bool:
        """Whether a known value shows in ``text``, in any encoding (one regex search)."""
        return self._pattern is not None and self._pattern.search(text) is not None

    # -- references -----------------------------------------------------------------

    def seal(self, doc: Any) -> tuple[Any, list[list[Any]]]:
        """``doc`` (parsed JSON) with named secrets replaced by placeholders, and the
        references: ``[path, [[offset, name, encoding], ...]]`` per string changed.

        A value without a name (masked only) is replaced by ``***``: it cannot be
        stored, and nothing could resolve it later.
        """
        refs: list[list[Any]] = []
        if self._pattern is None:
            return doc, refs
        return self._seal(doc, [], refs), refs

    def _seal(self, node: Any, path: list[Any], refs: list[list[Any]]) -> Any:
        if isinstance(node, str):
            return self._seal_text(node, path, refs)
        if isinstance(node, dict):
            return {k: self._seal(v, [*path, k], refs) for k, v in node.items()}
        if isinstance(node, list):
            return [self._seal(v, [*path, i], refs) for i, v in enumerate(node)]
        return node

    def _seal_text(self, text: str, path: list[Any], refs: list[list[Any]]) -> str:
        assert self._pattern is not None
        if self._pattern.search(text) is None:
            return text
        out: list[str] = []
        places: list[list[Any]] = []
        length, last = 0, 0
        for match in self._pattern.finditer(text):
            out.append(text[last : match.start()])
            length += match.start() - last
            name, label = self._by_form[match.group(0)]
            if name is None:
                piece = MASK
            else:
                piece = _placeholder(name, label)
                places.append([length, name, label])
            out.append(piece)
            length += len(piece)
            last = match.end()
        out.append(text[last:])
        sealed = "".join(out)
        if len(sealed) >= 8:  # ``Basic base64(user:password)``: the user is not known in advance
            sealed, places = self._seal_base64(sealed, places)
        if places:
            refs.append([path, places])
        return sealed

    def _seal_base64(self, text: str, places: list[list[Any]]) -> tuple[str, list[list[Any]]]:
        """Replace base64 runs that decode to text around a named secret's raw value by a
        placeholder whose encoding keeps the text around it (``b64wrap:<before>:<after>``).

        The placeholders found before are moved along by the change in length."""
        out: list[str] = []
        moved: list[list[Any]] = []
        pending = sorted(places, key=lambda p: p[0])
        length, last = 0, 0
        for match in _BASE64_RUN.finditer(text):
            decoded = _decode_base64(match.group(0), strict=True)
            hit = self._named_in(decoded) if decoded else None
            if hit is None:
                continue
            name, before, after = hit
            while pending and pending[0][0] < match.start():
                offset, *rest = pending.pop(0)
                moved.append([offset - last + length, *rest])
            out.append(text[last : match.start()])
            length += match.start() - last
            label = f"b64wrap:{quote(before, safe='')}:{quote(after, safe='')}"
            piece = _placeholder(name, label)
            moved.append([length, name, label])
            out.append(piece)
            length += len(piece)
            last = match.end()
        if not out:
            return text, places
        out.append(text[last:])
        moved += [[offset - last + length, *rest] for offset, *rest in pending]
        return "".join(out), moved

    def _named_in(self, decoded: str) -> tuple[str, str, str] | None:
        """The first named secret whose raw value is in ``decoded``, and the text around it."""
        for name, value in self.named.items():
            before, found, after = decoded.partition(value)
            if found:
                return name, before, after
        return None

    def unseal(self, doc: Any, refs: list[list[Any]]) -> Any:
        """``doc`` with each reference's placeholder replaced by the secret's current value.

        Raises :class:`UnknownSecret` for a secret no longer configured.
        """
        for path, places in refs:
            if not path:
                doc = self._resolve(doc, places)
                continue
            parent = doc
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = self._resolve(parent[path[-1]], places)
        return doc

    def _resolve(self, text: str, places: list[list[Any]]) -> str:
        for offset, name, label in sorted(places, key=lambda p: p[0], reverse=True):
            marker = _placeholder(name, label)
            if text[offset : offset + len(marker)] != marker:
                raise UnknownSecret(f"the stored reference to {name} does not match its text")
            value = self.named.get(name)
            if value is None:
                raise UnknownSecret(
                    f"the secret {name} is no longer configured (the call refers to it)"
                )
            text = text[:offset] + _encode(label, value, name) + text[offset + len(marker) :]
        return text

    def seal_json(self, text: str) -> tuple[str, str]:
        """A JSON text sealed: (JSON, references as JSON, ``""`` when there are none)."""
        if not self.contains(text):
            return text, ""
        doc, refs = self.seal(json.loads(text))
        return json.dumps(doc, ensure_ascii=False), json.dumps(refs) if refs else ""

    def unseal_json(self, text: str, refs: str) -> str:
        """The JSON :meth:`seal_json` made, with the secrets' values back (``refs`` empty:
        a row from before references, or without secrets: unchanged)."""
        if not refs:
            return text
        return json.dumps(self.unseal(json.loads(text), json.loads(refs)), ensure_ascii=False)


def _encode(label: str, value: str, name: str) -> str:
    """``value`` in the encoding a reference's ``label`` names."""
    if label.startswith("b64wrap:"):
        _, before, after = label.split(":", 2)
        return _b64(unquote(before) + value + unquote(after))
    encode = ENCODERS.get(label)
    if encode is None:
        raise UnknownSecret(f"the stored reference to {name} has an unknown encoding {label!r}")
    return encode(value)


def _decode_base64(token: str, *, strict: bool = False) -> str | None:
    """The text a base64 token stands for (``strict``: only one that re-encodes exactly,
    so that sealing can put the very same token back)."""
    padded = token + "=" * (-len(token) % 4)
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if strict:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return None
            return text if altchars is None and _b64(text) == token else None
        return raw.decode("utf-8", errors="replace")
    return None
