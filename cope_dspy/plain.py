"""Plain text for small models (the paper's prompt style): the instructions as the system message, the
inputs as plain text, and the whole reply read as the signature's one text output. No field markers."""

from __future__ import annotations

from typing import Any

from dspy.adapters.base import Adapter
from dspy.utils.exceptions import AdapterParseError

from .errors import CopeInputError

# The formats a role can be asked in (`Cascade(formats={role: name})`); "chat" is DSPy's two-field format.
FORMATS = ("chat", "plain", "paragraph", "block")
BLANK_LINE = "\n\n"
# The line closing a fenced code block. A code executor asked to end with its code often goes on (usage
# examples, an explanation: ~40% of the 1.5B model's characters on plain HumanEval, all of it billed), and its
# task reads only the code; the reply cut here keeps the open block, which `cope_dspy.code.extract_code` reads.
BLOCK_END = "\n```\n"


class PlainAdapter(Adapter):
    """A DSPy adapter that writes no field markers and asks for no second field.

    The system message is the signature's instructions; the user message is the first input's text, then
    each further non-empty input under its name (`Plans:` + the plans); the reply, stripped, is the first
    output field (`solution`, `goal`, `guideline`), and any later output fields are left empty, so the task
    reads the answer out of the text (`\\boxed{}`, a fenced code block). An empty reply raises
    `AdapterParseError`, which the cascade counts as an abstaining sample. Demos (from an optimizer) are
    rendered the same way, as user / assistant turns.

        import dspy
        from cope_dspy.plain import PlainAdapter

        with dspy.context(adapter=PlainAdapter()):
            dspy.Predict("question -> solution")(question="What is 2 + 3? End with \\\\boxed{}.")

    Args:
        stop: strings that end the reply (sent as the LM's `stop`), e.g. `("\\n\\n",)` for a planner that
            should write one paragraph: the model stops at its first blank line instead of going on to solve.
    """

    def __init__(self, stop: tuple[str, ...] = (), **kwargs):
        super().__init__(**kwargs)
        if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
            raise CopeInputError(f"stop must be a tuple of non-empty strings, e.g. ('\\n\\n',), got {stop!r}")
        self.stop = tuple(stop)

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        return super().__call__(lm, self._with_stop(lm_kwargs), signature, demos, inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        return await super().acall(lm, self._with_stop(lm_kwargs), signature, demos, inputs)

    def _with_stop(self, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
        if not self.stop or "stop" in lm_kwargs:  # a stop set on the call wins
            return lm_kwargs
        return {**lm_kwargs, "stop": list(self.stop)}

    # ---------------------------------------------------------------- prompts

    def format_system_message(self, signature) -> str:
        return self.format_task_description(signature)

    def format_field_description(self, signature) -> str:
        return ""

    def format_field_structure(self, signature) -> str:
        return ""

    def format_task_description(self, signature) -> str:
        return (signature.instructions or "").strip()

    def format_user_message_content(
        self, signature, inputs, prefix: str = "", suffix: str = "", main_request: bool = False
    ) -> str:
        parts = [prefix.strip()] if prefix.strip() else []
        for i, name in enumerate(signature.input_fields):
            value = inputs.get(name)
            text = "" if value is None else str(value).strip()
            if text:
                parts.append(text if i == 0 else f"{name.capitalize()}:\n{text}")
        if suffix.strip():
            parts.append(suffix.strip())
        return "\n\n".join(parts)

    def format_assistant_message_content(
        self, signature, outputs, missing_field_message: str | None = None
    ) -> str:
        first = next(iter(signature.output_fields))
        value = outputs.get(first)
        return str(value).strip() if value is not None else (missing_field_message or "")

    # ---------------------------------------------------------------- replies

    def parse(self, signature, completion: str) -> dict[str, Any]:
        text = (completion or "").strip()
        names = list(signature.output_fields)
        if not text:
            raise AdapterParseError(
                adapter_name=type(self).__name__,
                signature=signature,
                lm_response=completion or "",
                message="The reply is empty.",
            )
        return {name: text if i == 0 else "" for i, name in enumerate(names)}


def adapter_for(name: str) -> Adapter:
    """A fresh adapter for a format name: "plain", "paragraph" (plain, ending at the first blank line: for
    planners) or "block" (plain, ending where the first fenced code block closes: for code executors; a
    reply that opens its block with a bare ``` on its own line would end there, so use it with models that
    write ```python). "chat" is the cascade's own adapter and has no entry here."""
    if name == "plain":
        return PlainAdapter()
    if name == "paragraph":
        return PlainAdapter(stop=(BLANK_LINE,))
    if name == "block":
        return PlainAdapter(stop=(BLOCK_END,))
    raise CopeInputError(f"unknown format {name!r}; formats are {list(FORMATS)}")


def check_formats(formats, roles: tuple[str, ...]) -> dict[str, str]:
    """`formats` as a role -> format dict: a single name applies to every role; roles left out are "chat"."""
    if formats is None:
        return {}
    if isinstance(formats, str):
        formats = dict.fromkeys(roles, formats)
    if not isinstance(formats, dict):
        raise CopeInputError(
            f"formats must be a format name {list(FORMATS)} or a dict of role -> name, e.g. "
            f"{{'small_executor': 'plain'}}, got {formats!r}"
        )
    for role, name in formats.items():
        if role not in roles:
            raise CopeInputError(f"formats: unknown role {role!r}; roles are {list(roles)}")
        if name not in FORMATS:
            raise CopeInputError(f"formats[{role!r}]: unknown format {name!r}; formats are {list(FORMATS)}")
    return {role: name for role, name in formats.items() if name != "chat"}
