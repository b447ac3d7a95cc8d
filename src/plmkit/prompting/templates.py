"""Prompt templates and verbalizers (YAML).

A template file holds one mapping::

    name: review                  # optional; default: the file name without .yaml
    task: sst2                    # optional; checked against --task when given
    instruction: ""               # optional text before the demonstrations
    template: "Review: {text}\nSentiment:"     # the input slot {text} is required ({text_pair} for pairs)
    verbalizer: {"0": " negative", "1": " positive"}   # label -> continuation text
    separator: "\n\n"             # between demonstrations and before the query (default "\n\n")

A demonstration is ``template`` filled with a training example followed by its label's verbalizer
text; the query is ``template`` filled with the evaluated example, and each verbalizer continuation
is scored after it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

from plmkit.errors import UserError

KEYS = ("name", "task", "instruction", "template", "verbalizer", "separator")
SLOTS = ("text", "text_pair")


@dataclass
class Template:
    name: str
    template: str
    verbalizer: dict[str, str]
    instruction: str = ""
    separator: str = "\n\n"
    task: str | None = None
    source: str = ""
    slots: tuple[str, ...] = field(default=("text",))

    def fill(self, text: str, text_pair: str | None = None) -> str:
        """The template with its input slots filled."""
        return self.template.format(text=text.strip(), text_pair=(text_pair or "").strip())

    def demonstration(self, text: str, text_pair: str | None, label: str) -> str:
        return self.fill(text, text_pair) + self.verbalizer[label]


def _slots(where: str, text: str, allow_mask: bool = False) -> tuple[str, ...]:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise UserError(f"{where}: template is not a valid format string ({e}); write a literal brace as {{{{ or }}}}")
    for n in names:
        if n == "mask" and allow_mask:
            continue
        if n not in SLOTS:
            if n == "mask":
                raise UserError(f"{where}: slot {{mask}} is for --verbalizer patterns of plm finetune (an MLM's "
                                "answer position); plm icl scores the verbalizer after the template")
            raise UserError(f"{where}: template slot {{{n}}} is unknown; expected {{text}} and, for pairs, {{text_pair}}")
    return tuple(dict.fromkeys(names))


def parse_template(obj: object, source: str, labels: tuple[str, ...] | None = None,
                   pair: bool | None = None, task: str | None = None, allow_mask: bool = False) -> Template:
    """Validate one template mapping. ``labels``: the task's label set (the verbalizer must cover exactly
    those); ``pair``: whether the task has a second text (then {text_pair} is required)."""
    if not isinstance(obj, dict):
        raise UserError(f"{source}: expected a mapping with keys {', '.join(KEYS)}, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(KEYS))
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r}; expected some of {', '.join(KEYS)}")
    for key in ("template", "verbalizer"):
        if key not in obj:
            raise UserError(f"{source}: missing key {key!r}")
    tmpl = obj["template"]
    if not isinstance(tmpl, str) or not tmpl.strip():
        raise UserError(f"{source}: key 'template' must be a non-empty string")
    slots = _slots(f"{source}: key 'template'", tmpl, allow_mask)
    if "text" not in slots:
        raise UserError(f"{source}: key 'template' has no input slot {{text}} (got {tmpl!r})")
    if pair and "text_pair" not in slots:
        raise UserError(f"{source}: key 'template' has no slot {{text_pair}} for the second text of this pair task")
    if pair is False and "text_pair" in slots:
        raise UserError(f"{source}: key 'template' uses {{text_pair}} but this task has a single text")
    verb = obj["verbalizer"]
    if not isinstance(verb, dict) or not verb:
        raise UserError(f"{source}: key 'verbalizer' must map each label to its continuation text")
    verb = {str(k): v for k, v in verb.items()}
    for k, v in verb.items():
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"{source}: verbalizer of label {k!r} must be a non-empty string, got {v!r}")
    if labels is not None and set(verb) != set(labels):
        missing = sorted(set(labels) - set(verb))
        extra = sorted(set(verb) - set(labels))
        what = f"missing label {missing[0]!r}" if missing else f"label {extra[0]!r} is not one of the task's"
        raise UserError(f"{source}: key 'verbalizer': {what} (labels: {', '.join(labels)})")
    if len(set(verb.values())) != len(verb):
        raise UserError(f"{source}: key 'verbalizer' maps two labels to the same text")
    if obj.get("task") is not None and task is not None and str(obj["task"]) != task:
        raise UserError(f"{source}: template is for task {obj['task']!r}, not {task!r}")
    for key in ("instruction", "separator", "name"):
        if key in obj and not isinstance(obj[key], str):
            raise UserError(f"{source}: key {key!r} must be a string")
    name = obj.get("name") or Path(source.split(":")[0]).stem
    return Template(name=name, template=tmpl, verbalizer=verb, instruction=obj.get("instruction", "") or "",
                    separator=obj.get("separator", "\n\n"), task=obj.get("task"), source=source, slots=slots)


def template_files(paths: list[str | Path]) -> list[Path]:
    """YAML files named by ``paths`` (a directory stands for its ``*.yaml`` files, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml"))
            if not found:
                raise UserError(f"{p}: no *.yaml template files in this directory")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{p}: no such template file or directory")
    return out


def read_yaml(f: Path):
    """A template file's YAML (``safe_load``); invalid YAML -> file:line, non-UTF-8 -> file + byte, one line each."""
    import yaml

    try:
        return yaml.safe_load(f.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{f}:{mark.line + 1}" if mark is not None else str(f)
        raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_templates(paths: list[str | Path], labels: tuple[str, ...] | None = None, pair: bool | None = None,
                   task: str | None = None, allow_mask: bool = False) -> list[Template]:
    """Read and validate templates (YAML through ``safe_load``); names must be unique."""
    out: list[Template] = []
    for f in template_files(paths):
        t = parse_template(read_yaml(f), str(f), labels, pair, task, allow_mask)
        if any(o.name == t.name for o in out):
            raise UserError(f"{f}: template name {t.name!r} is used twice; give each template its own 'name'")
        out.append(t)
    return out
