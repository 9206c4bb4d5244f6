"""An adapter small models can follow: DSPy's chat format, read leniently, with no JSON retry call."""

from __future__ import annotations

import re

from dspy.adapters.chat_adapter import ChatAdapter
from dspy.utils.exceptions import AdapterParseError

_MARKER = re.compile(r"^\s*\[\[\s*##\s*(\w+)\s*##\s*\]\]\s*$", re.MULTILINE)


class LenientChatAdapter(ChatAdapter):
    """ChatAdapter that never spends a second LM call on a reply it cannot parse.

    Small models often drop the `[[ ## field ## ]]` markers. DSPy's ChatAdapter would then retry the whole
    call with its JSON adapter (a second, billed call). Instead, a reply whose markers are missing or
    incomplete is read as: the text goes to the first output field (e.g. the solution) and any missing
    later fields are left empty, so the task can still read an answer from the text (e.g. `\\boxed{}`).
    An empty reply still raises `AdapterParseError` (the cascade counts it as an abstaining sample).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("use_json_adapter_fallback", False)
        super().__init__(**kwargs)

    def parse(self, signature, completion: str) -> dict:
        try:
            return super().parse(signature, completion)
        except AdapterParseError:
            names = list(signature.output_fields)
            text = (completion or "").strip()
            if not text:
                raise
            fields = {}
            found = {m.group(1): m for m in _MARKER.finditer(text)}
            if names[0] not in found:
                body = _MARKER.split(text)[0].strip() or _MARKER.sub("", text).strip()
                fields[names[0]] = body
            for name in names:
                if name in fields:
                    continue
                m = found.get(name)
                if m is None:
                    fields[name] = ""
                    continue
                rest = text[m.end() :]
                nxt = _MARKER.search(rest)
                fields[name] = (rest[: nxt.start()] if nxt else rest).strip()
            if not any(fields.values()):
                raise
            return fields
