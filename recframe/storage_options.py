"""``storage.options``: fsspec options by protocol, given to every filesystem a command opens.

fsspec gives a filesystem class the defaults in ``fsspec.config.conf[protocol]`` each time one is
made, whoever makes it: ``recframe.storage``, DCP's fsspec checkpoint reader and writer, Lightning's
logger, TensorBoard's gfile, the data readers; arguments passed explicitly win. fsspec fills that
dict from the environment at import (``FSSPEC_S3='{"endpoint_url": ...}'``, ``FSSPEC_S3_ANON=true``)
and the store's own package reads its credentials (``AWS_*`` for s3fs). :func:`apply_options` adds a
run's ``storage.options`` over those, so one setting reaches every URL the command opens; processes
forked from it (DataLoader workers, preprocessing workers) inherit it, and each rank Lightning
starts composes the config and applies it itself.

``recframe train|eval|bench|plan`` read it from the config (``+storage.options.s3.endpoint_url=...``,
Hydra's ``+`` adds a key to the free-form mapping); ``recframe preprocess|export|predict|retrieve`` take the
same ``storage.options.PROTOCOL.KEY=VALUE`` arguments (:func:`split_option_arguments`).

Example:
    >>> options, rest, problems = split_option_arguments(["storage.options.memory.skip_instance_cache=true", "a=1"])
    >>> options, rest, problems
    ({'memory': {'skip_instance_cache': True}}, ['a=1'], [])
    >>> option_problems({"nosuch": {}})[0][0]
    'storage.options.nosuch'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PREFIX = "storage.options."


def _known_protocols() -> set[str]:
    from fsspec.registry import known_implementations, registry

    return set(known_implementations) | set(registry)


def option_problems(options: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(key, message, fix)`` for every entry of ``storage.options`` that is not ``protocol -> {option: value}``.

    Args:
        options: the ``storage.options`` mapping.

    Example:
        >>> option_problems({"s3": {"endpoint_url": "http://localhost:9000"}})
        []
    """
    out = []
    known = _known_protocols()
    for protocol, values in options.items():
        key = f"{PREFIX}{protocol}"
        if protocol not in known:
            out.append((key, f"fsspec knows no protocol {protocol!r}", "name a URL scheme fsspec knows: s3, gs, "
                        "gcs, abfs, hdfs, memory, file, ... (the part of the URL before ://)"))
        elif not isinstance(values, Mapping):
            out.append((key, f"must map option names to values, got {values!r}",
                        f"e.g. +{key}.endpoint_url=http://localhost:9000"))
    return out


def apply_options(options: Mapping[str, Mapping[str, Any]]) -> None:
    """Give every fsspec filesystem of these protocols made from now on in this process these options.

    Args:
        options: protocol (``s3``, ``gs``, ``memory`` ...) -> keyword arguments of its filesystem class
            (s3fs: ``endpoint_url``, ``anon``, ``key``, ``client_kwargs`` ...); they update the environment's.

    Example:
        >>> import fsspec
        >>> apply_options({"memory": {"skip_instance_cache": True}})
        >>> fsspec.config.conf["memory"]
        {'skip_instance_cache': True}
        >>> del fsspec.config.conf["memory"]
    """
    from fsspec.config import conf

    for protocol, values in options.items():
        conf.setdefault(str(protocol), {}).update({str(k): v for k, v in dict(values).items()})


def split_option_arguments(args: list[str]) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """The ``[+]storage.options.PROTOCOL.KEY=VALUE`` arguments of a command, its other arguments, and problems.

    A value is read as YAML (``true``, ``9000``, ``{region_name: eu}``), as Hydra reads an override.

    Args:
        args: the command's arguments.

    Example:
        >>> split_option_arguments(["+storage.options.s3.endpoint_url=http://h:9000", "--output", "s3://b/x"])
        ({'s3': {'endpoint_url': 'http://h:9000'}}, ['--output', 's3://b/x'], [])
        >>> split_option_arguments(["storage.options.s3=1"])[2]
        ['storage.options.s3=1: give one option: storage.options.PROTOCOL.KEY=VALUE']
    """
    import yaml

    options: dict[str, dict[str, Any]] = {}
    rest, problems = [], []
    for arg in args:
        key, sep, value = arg.lstrip("+").partition("=")
        if not key.startswith(PREFIX) or not sep:
            rest.append(arg)
            continue
        protocol, dot, name = key.removeprefix(PREFIX).partition(".")
        if not dot or not protocol or not name:
            problems.append(f"{arg}: give one option: {PREFIX}PROTOCOL.KEY=VALUE")
            continue
        options.setdefault(protocol, {})[name] = yaml.safe_load(value) if value else ""
    problems += [f"{key}: {message} ({fix})" for key, message, fix in option_problems(options)]
    return options, rest, problems
