"""``bot4 config``: every key with its default, unit, range and doc as TOML (from the config dataclasses'
own field metadata), and a check of a config file without running anything."""
from __future__ import annotations

import dataclasses
import sys
from typing import get_type_hints

import tomlkit

from pipeline.config import RANGES, Config, ConfigError, allocation_note, load, unit_of

HEADER = ("Bot4 configuration: every key with its default (bot4 config defaults). A file for bot4 run --config "
          "needs only the keys it changes; bot4 config check FILE checks one.")


def _comment_lines(text: str, width: int = 116) -> list[str]:
    """``text`` cut into comment lines of at most ``width`` characters (TOML comments are single lines)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines


def _about(section: str, key: dataclasses.Field, kind: type) -> str:
    text = key.metadata["doc"]
    unit = unit_of(key)
    bounds = RANGES.get(section, {}).get(key.name) if kind in (int, float) else None
    return text + (f". Unit: {unit}" if unit else "") + (f". Range: {bounds}" if bounds else "")


def defaults_toml(config: Config | None = None) -> str:
    """The TOML of ``config`` (the defaults when None), each section's and each key's doc as comments above it."""
    config = config or Config()
    doc = tomlkit.document()
    for line in _comment_lines(HEADER):
        doc.add(tomlkit.comment(line))
    sections = get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = sections[section.name]
        table = tomlkit.table()
        doc.add(tomlkit.nl())
        summary = (cls.__doc__ or "").strip().split("\n\n")[0]  # the first paragraph of its docstring
        for line in _comment_lines(" ".join(summary.split())) if summary else []:
            doc.add(tomlkit.comment(line))
        kinds = get_type_hints(cls)
        for key in dataclasses.fields(cls):
            table.add(tomlkit.comment(_about(section.name, key, kinds[key.name])))  # one line, however long
            value = getattr(getattr(config, section.name), key.name)
            table.add(key.name, list(value) if isinstance(value, tuple) else value)
        doc.add(section.name, table)
    return tomlkit.dumps(doc)


def check(path: str) -> int:
    """Load and check ``path`` as ``bot4 run --config`` would (plan included: the files the config names are
    read); one line either way. Exit 0 when it would start, 2 naming the key, its range and the fix otherwise."""
    from pipeline.plan import resolve
    try:
        config = load(path)
        resolve(config)
    except ConfigError as exc:
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a directory, no permission
        print(f"bot4: config error: cannot read {path}: {exc.strerror}; give a readable TOML file", file=sys.stderr)
        return 2
    defaults, changed = Config(), []
    for section in dataclasses.fields(Config):
        ours, theirs = getattr(config, section.name), getattr(defaults, section.name)
        changed += [f"{section.name}.{k.name}" for k in dataclasses.fields(ours)
                    if getattr(ours, k.name) != getattr(theirs, k.name)]
    notes = [f"strategy.kind={config.strategy.kind}", f"feed.source={config.feed.source}"]
    if config.gateway.live_venues:
        notes.append(f"live venues {', '.join(config.gateway.live_venues)} (bot4 run needs --live)")
    if allocation_note(config):
        notes.append("no strategy allocated: nothing trades")
    print(f"{path}: ok, {len(changed)} key{'s' * (len(changed) != 1)} differ from the defaults"
          f"{' (' + ', '.join(changed[:6]) + (', ...' if len(changed) > 6 else '') + ')' if changed else ''}; "
          + "; ".join(notes))
    return 0
