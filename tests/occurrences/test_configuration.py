"""The occurrences' configuration: defaults, a TOML file over them, checks that name the entry
and field at fault, and a tenant's settings over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from cidade.config import load_settings
from cidade.occurrences.configuration import (
    DEFAULT_DEPARTMENTS,
    ConfigError,
    default_config,
    load_config,
)
from cidade.occurrences.model import duration_seconds, iso_duration

FILE = """
[[departments]]
code = "public-space"
name = "Espaço Público"
email = "espaco.publico@example.org"

[[categories]]
code = "pothole"
name = "Buraco na via"
group = "Vias"
department = "public-space"
priority = "high"
duplicate_radius = 100
duplicate_window = "P14D"
[categories.deadlines.high]
response = "PT1H"
resolution = "P2D"
[[categories.attributes]]
code = "size"
description = "Qual o tamanho?"
datatype = "singlevaluelist"
values = [{key = "s", name = "Pequeno"}, {key = "l", name = "Grande"}]

[[areas]]
code = "baixa"
name = "Baixa"
geometry = {type = "Polygon", coordinates = [[[-8.62, 41.14], [-8.60, 41.14], [-8.60, 41.16], [-8.62, 41.16], [-8.62, 41.14]]]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "occurrences.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_portos_operations_room():
    config = default_config()
    assert [d.code for d in DEFAULT_DEPARTMENTS] == [
        "mobility", "municipal-police", "fire", "civil-protection", "environment",
        "public-lighting", "public-space", "water",
    ]  # fmt: skip
    config.check()  # every category routed to a configured department
    assert config.category("fire").priority == "urgent"
    assert config.category("pothole").duplicate_radius == 250
    assert config.category("pothole").duplicate_window == 7 * 86400


def test_file_over_the_defaults(tmp_path):
    config = load_config(write(tmp_path, FILE))
    assert config.departments["public-space"].name == "Espaço Público"
    assert len(config.departments) == 8  # the others stay
    pothole = config.category("pothole")
    assert (pothole.group, pothole.priority, pothole.duplicate_radius) == ("Vias", "high", 100)
    assert pothole.deadlines["high"] == (3600, 2 * 86400)
    assert pothole.deadlines["low"] == (2 * 86400, 20 * 86400)  # the default
    assert [a.code for a in pothole.attributes] == ["size"]
    assert config.area_of(41.15, -8.61) == "baixa" and config.area_of(41.0, -8.0) == ""
    fresh = load_config(write(tmp_path, "replace_defaults = true\n" + FILE))
    assert list(fresh.departments) == ["public-space"] and list(fresh.categories) == ["pothole"]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[[categories]]\ncode = "x"\nname = "X"\ngroup = "G"\ndepartment = "nowhere"\n',
         "department 'nowhere'"),
        ('[[categories]]\ncode = "X Y"\nname = "X"\ngroup = "G"\ndepartment = "fire"\n', "code"),
        ('[[categories]]\ncode = "x"\nname = "X"\ngroup = "G"\ndepartment = "fire"\n'
         'priority = "asap"\n', "priority"),
        ('[[categories]]\ncode = "x"\nname = "X"\ngroup = "G"\ndepartment = "fire"\n'
         '[categories.deadlines.low]\nresponse = "P1M"\n', "deadlines.low"),
        ('[[categories]]\ncode = "x"\nname = "X"\ngroup = "G"\ndepartment = "fire"\n'
         '[[categories.attributes]]\ncode = "a"\ndescription = "?"\ndatatype = "multivaluelist"\n',
         "values"),
        ('[[departments]]\ncode = "d"\n', "name"),
        ('[[areas]]\ncode = "a"\nname = "A"\ngeometry = {type = "Point", coordinates = [0, 0]}\n',
         "geometry"),
        ("colour = 1\n", "colour"),
        ("this is not toml", "occurrences configuration"),
    ],
)  # fmt: skip
def test_a_bad_file_names_what_is_wrong(tmp_path, text, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.").replace("(", r"\(")):
        load_config(write(tmp_path, text))


def test_a_bad_file_stops_the_start(tmp_path):
    path = write(tmp_path, '[[departments]]\ncode = "d"\n')
    with pytest.raises(SystemExit, match="CIDADE_OCCURRENCES_CONFIG"):
        load_settings({"CIDADE_OCCURRENCES_CONFIG": str(path)})
    assert load_settings({"CIDADE_OCCURRENCES_CONFIG": str(write(tmp_path, FILE))})


def test_tenant_settings_over_the_file():
    config = default_config().overlaid(
        [
            ("department", "parks", {"name": "Parks"}),
            ("category", "graffiti", None),  # removed
            ("category", "fallen-branch", {"name": "Fallen branch", "group": "Green",
                                           "department": "parks"}),
        ]
    )  # fmt: skip
    assert "graffiti" not in config.categories
    assert config.category("fallen-branch").department == "parks"
    assert "graffiti" in default_config().categories  # the base is untouched


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT30M", 1800), ("P2D", 172800), ("P1DT12H", 129600), ("PT0.5S", 0.5), (90, 90.0)],
)
def test_durations(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["P", "PT", "P1M", "P1Y", "1 day", "-PT1H", -5, True, None])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        duration_seconds(bad)


def test_iso_duration_round_trip():
    for seconds in (0, 59, 3600, 86400 + 1800, 20 * 86400):
        assert duration_seconds(iso_duration(seconds)) == seconds
