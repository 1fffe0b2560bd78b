"""Run configs: typed dataclasses filled from YAML plus `key=value` overrides.

One mechanism for every command (`d1 sft`, `d1 grpo`, ...): a run config is a (nested)
dataclass whose fields carry documented defaults that reproduce the paper. `load_config` reads
an optional YAML file, applies command-line overrides (`lr=1e-5`, `optim.warmup_steps=10`; each
value is parsed as a YAML scalar or flow collection), and converts the result to the dataclass,
checking every key and type *before* any model is loaded. Errors name the offending key, where
it came from, and suggest close matches for typos.

An optional section whose type has an `enabled` field (`lora`) is off when null or when
`enabled` is false (it is then None in the built config); command-line keys of a null section
do not switch it on without `enabled=true`.

After construction, every (nested) config object that defines a `validate()` method has it
called (outermost last); such methods raise `ConfigError` naming keys, e.g. for a local data
file that does not exist.

A config class may declare, as class attributes: `__config_moved__` ({old key: new dotted
key}: the old key is an error naming the new one, never a silent alias),
`__config_forbidden__` ({dotted key: why}: keys valid in the nested type but not here) and
`__config_scalar_key__` (the key a bare scalar given for the whole section should go to, named
in the error).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
    "set_key",
]

T = TypeVar("T")

OVERRIDE_SOURCE = "command line"


class ConfigError(ValueError):
    """A config problem found before any work starts; the message names the key(s).

    `validate()` methods raise `ConfigError.keyed([(key, message), ...])` with keys relative to
    their own section; the loader prefixes the section's dotted path.
    """

    def __init__(self, problems: str | Sequence[str], *, keyed: Sequence[tuple[str, str]] = ()):
        self.keyed = list(keyed)
        self.plain = [problems] if isinstance(problems, str) else list(problems)
        self.problems = self.plain + [f"config key {k!r}: {m}" for k, m in self.keyed]
        if len(self.problems) == 1:
            msg = self.problems[0]
        else:
            msg = f"{len(self.problems)} config problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(msg)

    @classmethod
    def keyed(cls, items: Sequence[tuple[str, str]]) -> ConfigError:
        """Problems as (key relative to the validated section, message) pairs."""
        return cls([], keyed=items)


# ----------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `section.key=value` into (["section", "key"], parsed value).

    The value is parsed as YAML (`1e-5` and `3e-6` are read as floats later, by the float
    field's converter, since YAML 1.1 reads them as strings); `key=` gives null.
    """
    if "=" not in text:
        raise ConfigError(
            f"override {text!r} must look like key=value (e.g. optim.learning_rate=1e-5)."
        )
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part; use section.key=value.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # an unparsable value is kept as a string; the field type decides
    return parts, value


def set_key(
    data: dict[str, Any],
    key: str | Sequence[str],
    value: Any,
    origins: dict[str, str] | None = None,
    source: str = OVERRIDE_SOURCE,
    filled: dict[str, str] | None = None,
) -> None:
    """Set the dotted `key` ("a.b.c") of the nested dict `data` to `value` (in place).

    `filled`, when given, records each section this had to create: its dotted path -> "null"
    (it was null) or "absent" (it was not in `data`); see `_Builder.switchable`.
    """
    parts = key.split(".") if isinstance(key, str) else list(key)
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            if filled is not None:
                filled.setdefault(
                    ".".join(parts[: i + 1]), "absent" if part not in node else "null"
                )
            child = node[part] = {}
        elif not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise ConfigError(
                f"{source} sets {'.'.join(parts)!r}, but {prefix!r} is a value ({child!r}), "
                "not a section."
            )
        node = child
    node[parts[-1]] = value
    if origins is not None:
        origins[".".join(parts)] = source


def apply_overrides(
    data: dict[str, Any],
    overrides: Sequence[str],
    origins: dict[str, str] | None = None,
    filled: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Set each `a.b.c=value` override in the nested dict `data` (in place; also returned);
    `filled` as for `set_key`."""
    for text in overrides:
        parts, value = parse_override(text)
        set_key(data, parts, value, origins, source=f"override {text!r}", filled=filled)
        if origins is not None:
            origins[".".join(parts)] = OVERRIDE_SOURCE
    return data


# ----------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    """Internal: a value does not fit a type (message says why)."""


_ABSENT = object()
_YAML_TRUE = frozenset({"y", "yes", "on", "true"})
_YAML_FALSE = frozenset({"n", "no", "off", "false"})


def _field_default(base: Any, f: dataclasses.Field) -> Any:
    """The current value of field `f`: from `base` when given, else the field's default."""
    if base is not None:
        return getattr(base, f.name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    if f.default is not dataclasses.MISSING:
        return f.default
    return None


def _switch_type(args: tuple[Any, ...]) -> type | None:
    """The section type of an optional (`X | None`) section with an `enabled` switch."""
    if type(None) not in args:
        return None
    for arg in args:
        is_section = dataclasses.is_dataclass(arg) and isinstance(arg, type)
        if is_section and any(f.name == "enabled" for f in dataclasses.fields(arg)):
            return arg
    return None


class _Builder:
    def __init__(
        self,
        origins: Mapping[str, str],
        default_source: str,
        filled: Mapping[str, str] | None = None,
    ):
        self.origins = origins
        self.default_source = default_source
        self.filled = filled or {}
        self.errors: list[str] = []

    def switchable(self, tp: type, value: Mapping[str, Any], path: str, base: Any) -> Any:
        """An optional section with an `enabled` switch (e.g. `lora`): built, or None when
        `enabled` is false. A section that was null (explicitly, or by default) and that
        command-line overrides filled in without `enabled` is an error: `lora.r=8` must not
        silently turn LoRA on for a full fine-tuning config."""
        kind = self.filled.get(path)
        if "enabled" not in value and (kind == "null" or (kind == "absent" and base is None)):
            keys = ", ".join(f"{path}.{k}" for k in value)
            src = self.where(path)
            where = "null" if kind != "null" else f"null in {src or 'the defaults'}"
            if src == OVERRIDE_SOURCE and kind == "null":
                where = "null on the command line"
            self.errors.append(
                f"config key {path!r} is {where} (off), so setting {keys} would silently "
                f"switch it on: add {path}.enabled=true to turn it on, or drop {keys}."
            )
            return None
        built = self.build(tp, value, path, base if isinstance(base, tp) else None)
        return built if built is not None and built.enabled else None

    def where(self, path: str) -> str:
        # The most specific recorded origin for this key (an override of a parent counts; so
        # does one of a child: `bogus.key=1` makes the unknown section `bogus` its own).
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            src = self.origins.get(".".join(parts[:i]))
            if src:
                return src
        children = {src for key, src in self.origins.items() if key.startswith(f"{path}.")}
        if len(children) == 1:
            return children.pop()
        return self.default_source

    def error(self, path: str, msg: str) -> None:
        src = self.where(path)
        self.errors.append(f"config key {path!r}: {msg}" + (f" (from {src})" if src else ""))

    def build(self, cls: type, data: Any, path: str, base: Any = None) -> Any:
        """`cls` from `data`; keys absent from `data` keep `base`'s values (a section's own
        default instance, e.g. SFT's paper `TrainingConfig`), else the field defaults."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            scalar_key = getattr(cls, "__config_scalar_key__", None)
            hint = (
                f" To set its {scalar_key}, write {path}.{scalar_key}={data}."
                if scalar_key and isinstance(data, (str, int, float)) and path
                else ""
            )
            self.error(path or "<root>", f"expected a section (mapping), got {data!r}.{hint}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        moved: Mapping[str, str] = getattr(cls, "__config_moved__", {})
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            full = f"{path}.{key}" if path else str(key)
            if key in moved and key not in fields:
                new_key = f"{path}.{moved[key]}" if path else moved[key]
                self.error(full, f"this key moved: write {new_key}={value} instead.")
                continue
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.6)
                hint = (
                    f" Did you mean {', '.join(repr(f'{path}.{c}' if path else c) for c in close)}?"
                    if close
                    else ""
                )
                self.error(
                    full, f"unknown key.{hint} Known keys here: {', '.join(sorted(fields))}."
                )
                continue
            try:
                kwargs[key] = self.convert(
                    value, hints[key], full, _field_default(base, fields[key])
                )
            except _Mismatch as e:
                self.error(full, str(e))
        for dotted, msg in getattr(cls, "__config_forbidden__", {}).items():
            node: Any = data
            for part in dotted.split("."):
                node = node.get(part, _ABSENT) if isinstance(node, Mapping) else _ABSENT
            if node is not _ABSENT and node is not None:  # null: a saved config's own dump
                self.error(f"{path}.{dotted}" if path else dotted, msg)
        for name, f in fields.items():
            if name not in kwargs and name not in data and base is not None:
                kwargs[name] = copy.deepcopy(getattr(base, name))
            elif (
                name not in kwargs
                and name not in data
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                full = f"{path}.{name}" if path else name
                self.error(full, f"required key is missing (type {_type_name(hints[name])}).")
        if len(self.errors):
            return None
        try:
            return cls(**kwargs)
        except ConfigError as e:
            # A section that validates itself on construction names its own keys.
            for key, msg in e.keyed:
                self.error(f"{path}.{key}" if path else key, msg)
            for msg in e.plain:
                self.error(path or "<root>", msg)
            return None
        except (TypeError, ValueError) as e:
            self.error(path or "<root>", str(e))
            return None

    def convert(self, value: Any, tp: Any, path: str, base: Any = None) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp is Any:
            return value
        if origin in (Union, types.UnionType):
            if value is None:
                if type(None) in args:
                    return None
                raise _Mismatch(f"must not be null (expected {_type_name(tp)}).")
            switch = _switch_type(args)
            if switch is not None and isinstance(value, Mapping):
                return self.switchable(switch, value, path, base)
            for arg in args:
                if arg is type(None):
                    continue
                try:
                    return self.convert(value, arg, path, base)
                except _Mismatch:
                    continue
            raise _Mismatch(f"expected {_type_name(tp)}, got {value!r}.")
        if origin is Literal:
            if isinstance(value, bool) and not any(a is value for a in args):
                # YAML 1.1 reads on/off/yes/no as booleans: map back to a matching option
                # (e.g. mixed_precision: no, progress: off).
                words = _YAML_TRUE if value else _YAML_FALSE
                matches = [a for a in args if isinstance(a, str) and a.lower() in words]
                if len(matches) == 1:
                    return matches[0]
            elif value in args:
                return value
            raise _Mismatch(f"must be one of {', '.join(repr(a) for a in args)}; got {value!r}.")
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if value is None:
                raise _Mismatch("must be a section, not null.")
            return self.build(tp, value, path, base if isinstance(base, tp) else None)
        if origin in (list, tuple, Sequence) or tp in (list, tuple):
            if isinstance(value, (str, int, float, bool)) and origin is not tuple:
                value = [value]  # `report_to=wandb` means `[wandb]`
            if not isinstance(value, (list, tuple)):
                raise _Mismatch(f"expected a list, got {value!r}.")
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                if len(value) != len(args):
                    raise _Mismatch(f"expected {len(args)} items, got {len(value)}.")
                return tuple(
                    self.convert(v, a, f"{path}[{i}]")
                    for i, (v, a) in enumerate(zip(value, args, strict=True))
                )
            item_tp = args[0] if args else Any
            items = [self.convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin in (dict, Mapping) or tp is dict:
            if not isinstance(value, Mapping):
                raise _Mismatch(f"expected a mapping, got {value!r}.")
            val_tp = args[1] if len(args) == 2 else Any
            return {str(k): self.convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise _Mismatch(f"expected true/false, got {value!r}.")
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                try:
                    return int(value.replace("_", ""))
                except ValueError:
                    pass
            raise _Mismatch(f"expected an integer, got {value!r}.")
        if tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):  # YAML 1.1 reads `1e-5` as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            raise _Mismatch(f"expected a number, got {value!r}.")
        if tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise _Mismatch(f"expected a string, got {value!r}.")
        if tp is Path:
            if isinstance(value, (str, Path)):
                return Path(value)
            raise _Mismatch(f"expected a path, got {value!r}.")
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        raise _Mismatch(f"expected {_type_name(tp)}, got {value!r}.")


def _validate_tree(obj: Any, path: str = "") -> list[str]:
    """Call `validate()` on every nested config (children first); collect the problems."""
    problems: list[str] = []
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return problems
    for f in dataclasses.fields(obj):
        problems += _validate_tree(getattr(obj, f.name), f"{path}{f.name}.")
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as e:
            problems += e.plain + [f"config key {path + k!r}: {m}" for k, m in e.keyed]
    return problems


def config_from_dict(
    cls: type[T],
    data: Mapping[str, Any] | None,
    *,
    source: str = "",
    origins: Mapping[str, str] | None = None,
    filled: Mapping[str, str] | None = None,
) -> T:
    """Build `cls` from a nested dict, checking keys and types, then run `validate()` hooks.

    `filled` (from `set_key` / `apply_overrides`) names the sections that were created by
    setting a key inside them; an optional section with an `enabled` switch (`lora`) that
    was null must be switched on explicitly.

    Raises:
        ConfigError: listing every unknown key (with close matches), wrong type, missing
            required key and failed validation, each naming the dotted key.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type.")
    builder = _Builder(origins or {}, source, filled)
    cfg = builder.build(cls, data, "")
    if builder.errors:
        raise ConfigError(builder.errors)
    problems = _validate_tree(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def config_or_load(cls: type[T], config: T | str | Path | None, overrides: Sequence[str] = ()) -> T:
    """`config` itself when it already is a `cls`, else `load_config(cls, config, overrides)`
    (a YAML path, or None for the defaults): the one entry of the Python API's trainers."""
    if isinstance(config, cls):
        if overrides:
            raise ValueError(
                f"Pass overrides together with a YAML path, not with a {cls.__name__} object."
            )
        return config
    return load_config(cls, config, list(overrides))


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    values: Mapping[str, Any] | None = None,
    values_source: str = OVERRIDE_SOURCE,
    defaults: Mapping[str, Any] | None = None,
    defaults_source: str = "defaults",
) -> T:
    """Read a run config: YAML file (optional) + values + `key=value` overrides -> `cls`.

    Args:
        cls: the config dataclass (e.g. `SFTConfig`).
        path: a YAML file holding a mapping of the config's keys; None uses the defaults.
        overrides: `key=value` or `section.key=value` strings, applied last; values are parsed
            as YAML (`lora=null`, `train.report_to=[tensorboard,wandb]`).
        values: {dotted key: Python value} applied after the file and before `overrides`
            (command-line flags, already typed); errors name them as from `values_source`.
        defaults: {dotted key: Python value} for keys that neither the file, `values` nor
            `overrides` set (e.g. the settings a checkpoint was trained with).

    Raises:
        ConfigError: for a missing file, bad YAML, or any key/type/validation problem.
    """
    data: dict[str, Any] = {}
    source = ""
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist.")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys at top level.")
        data = loaded
    origins: dict[str, str] = {}
    filled: dict[str, str] = {}
    for key, value in (values or {}).items():
        set_key(data, key, value, origins, source=values_source, filled=filled)
    apply_overrides(data, list(overrides), origins, filled)
    for key, value in (defaults or {}).items():
        if not _has_key(data, key):
            set_key(data, key, value, origins, source=defaults_source, filled=filled)
    return config_from_dict(cls, data, source=source, origins=origins, filled=filled)


def _has_key(data: Mapping[str, Any], key: str) -> bool:
    """Whether the nested dict sets the dotted `key` (or a value at one of its parents)."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return True  # a parent holds a value: the key is decided there
        if part not in node:
            return False
        node = node[part]
    return True


# ----------------------------------------------------------------------------- saving


def config_to_dict(cfg: Any) -> Any:
    """A plain (YAML/JSON-serialisable) nested dict of a config dataclass."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML text (field order kept)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Save the resolved config as YAML (atomically); `load_config(type(cfg), path)` reads it."""
    atomic_write_text(path, dump_config(cfg))
    return Path(path)
