"""A model's chat template: found in its files, rendered around a prompt.

Where it comes from: a ``.gguf`` file's ``tokenizer.chat_template`` metadata, or an HF-format
directory's ``chat_template.jinja`` / ``chat_template.json`` / ``tokenizer_config.json``
(``"chat_template"``). It is rendered with Jinja2 in a sandbox (as transformers does): one user
message holding the whole prompt, then the generation prompt (``add_generation_prompt=True``).
"""

from __future__ import annotations

import json
from pathlib import Path

from plmkit.errors import UserError


def find_chat_template(model_path: str | Path) -> str | None:
    """The Jinja chat template stored with the model at ``model_path``, or None when it has none."""
    p = Path(model_path)
    if p.suffix == ".gguf" and p.is_file():
        from plmkit.interop.gguf import _field, _reader

        value = _field(_reader(p), "tokenizer.chat_template")
        if value is None:
            return None
        return value if isinstance(value, str) else bytes(value).decode("utf-8")
    if not p.is_dir():
        return None
    if (p / "chat_template.jinja").is_file():
        return (p / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        f = p / name
        if f.is_file():
            try:
                t = json.loads(f.read_text(encoding="utf-8")).get("chat_template")
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as e:
                raise UserError(f"{f}: not a JSON object ({e})") from None
            if isinstance(t, list):  # named templates: take "default"
                t = next((x.get("template") for x in t if isinstance(x, dict) and x.get("name") == "default"), None)
            if isinstance(t, str) and t.strip():
                return t
    return None


def require_chat_template(model_path: str | Path) -> str:
    t = find_chat_template(model_path)
    if t is None:
        raise UserError(f"{model_path}: --chat needs the model's chat template, but none is stored with this model "
                        "(no tokenizer.chat_template in the GGUF metadata, no chat_template in tokenizer_config.json / "
                        "chat_template.jinja); drop --chat")
    return t


def render_chat(template: str, user_message: str, special_tokens: dict[str, str] | None = None) -> str:
    """The prompt text the model sees: ``template`` applied to one user message + the generation prompt."""
    try:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:  # pragma: no cover - jinja2 comes with torch
        raise UserError("--chat needs the jinja2 package to render the chat template") from e

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    st = {f"{k}_token": v for k, v in (special_tokens or {}).items()}
    try:
        return env.from_string(template).render(messages=[{"role": "user", "content": user_message}],
                                                add_generation_prompt=True, **st)
    except TemplateError as e:
        raise UserError(f"the model's chat template failed to render: {e}") from None
