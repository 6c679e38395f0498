"""The q parser (ETSI GS CIM 009 §4.9 grammar): every construct, precedence, and 400 errors."""

from __future__ import annotations

import pytest

from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.query.q import (
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_TERMS,
    And,
    Compare,
    Exists,
    InList,
    NotExists,
    Or,
    Path,
    Pattern,
    Range,
    Temporal,
    parse_q,
    render_q,
)

D = "https://uri.etsi.org/ngsi-ld/default-context/"


def expand(term: str) -> str:
    return term if ":" in term else D + term


def parse(text: str) -> object:
    return parse_q(text, expand)


def p(*names: str, meta: str | None = None, keys: tuple[str, ...] = ()) -> Path:
    return Path(expand(names[0]), tuple(expand(n) for n in names[1:]), meta, keys)


def fails(text: str, fragment: str = "", position: int | None = None) -> BadRequestData:
    with pytest.raises(BadRequestData) as info:
        parse(text)
    detail = info.value.detail
    assert info.value.status == 400
    assert fragment in detail, detail
    if position is not None:
        assert f"position {position}:" in detail, detail
    return info.value


# -- terms ----------------------------------------------------------------------------------------


def test_existence_and_non_existence() -> None:
    assert parse("temperature") == Exists(p("temperature"))
    assert parse("!temperature") == NotExists(p("temperature"))
    assert parse("!a.b[c]") == NotExists(p("a", "b", keys=("c",)))


@pytest.mark.parametrize("op", ["==", "!=", ">", ">=", "<", "<="])
def test_comparison_operators(op: str) -> None:
    assert parse(f"speed{op}50") == Compare(p("speed"), op, 50)  # type: ignore[arg-type]


def test_numbers() -> None:
    assert parse("a==0").value == 0  # type: ignore[union-attr]
    assert parse("a==-7").value == -7  # type: ignore[union-attr]
    v = parse("a==20.5").value  # type: ignore[union-attr]
    assert v == 20.5 and isinstance(v, float)
    assert parse("a==1e3").value == 1000.0  # type: ignore[union-attr]
    assert parse("a==-2.5E-2").value == -0.025  # type: ignore[union-attr]
    assert isinstance(parse("a==12").value, int)  # type: ignore[union-attr]
    assert parse("a>=12345678901234567890").value == 12345678901234567890  # type: ignore[union-attr]


def test_strings_and_escapes() -> None:
    assert parse('brandName!="Mercedes"') == Compare(p("brandName"), "!=", "Mercedes")
    assert parse(r'a=="say \"hi\""').value == 'say "hi"'  # type: ignore[union-attr]
    assert parse(r'a=="back\\slash"').value == "back\\slash"  # type: ignore[union-attr]
    assert parse(r'a=="\u00e9t\u00e9"').value == "été"  # type: ignore[union-attr]
    # Delimiters and spaces are plain characters inside quotes.
    assert parse('a=="x;y|z(),.. w"').value == "x;y|z(),.. w"  # type: ignore[union-attr]
    assert parse('a==""').value == ""  # type: ignore[union-attr]


def test_booleans() -> None:
    assert parse("a==true") == Compare(p("a"), "==", True)
    assert parse("a!=false") == Compare(p("a"), "!=", False)
    assert parse('a=="true"').value == "true"  # type: ignore[union-attr]


def test_uris_unquoted_and_quoted() -> None:
    q = "isParked==urn:ngsi-ld:OffStreetParking:Downtown1"
    assert parse(q) == Compare(p("isParked"), "==", "urn:ngsi-ld:OffStreetParking:Downtown1")
    assert parse('isParked=="urn:ngsi-ld:OffStreetParking:Downtown1"') == parse(q)
    url = "https://example.org/a/b.c?x=1#f"
    assert parse(f"rel=={url}").value == url  # type: ignore[union-attr]


def test_temporal_literals_are_normalized() -> None:
    dt = parse("temperature.observedAt>=2017-12-24T12:00:00Z")
    assert dt == Compare(
        p("temperature", meta="observedAt"),
        ">=",
        Temporal("DateTime", "2017-12-24T12:00:00.000000Z"),
    )
    # Offsets are converted to UTC; fractions padded or cut to microseconds.
    assert parse("a<2020-01-01T01:30:00.5+01:30").value == Temporal(  # type: ignore[union-attr]
        "DateTime", "2020-01-01T00:00:00.500000Z"
    )
    assert parse("a<2020-01-01T00:00:00.1234567Z").value == Temporal(  # type: ignore[union-attr]
        "DateTime", "2020-01-01T00:00:00.123456Z"
    )
    assert parse("a==2020-02-29").value == Temporal("Date", "2020-02-29")  # type: ignore[union-attr]
    assert parse("a>12:00:00Z").value == Temporal("Time", "12:00:00.000000Z")  # type: ignore[union-attr]
    assert parse("a>12:00").value == Temporal("Time", "12:00:00.000000Z")  # type: ignore[union-attr]


def test_value_lists() -> None:
    assert parse("a==1,2,3") == InList(p("a"), (1, 2, 3))
    assert parse('color=="black","red"') == InList(p("color"), ("black", "red"))
    assert parse('a!=1,"x",true,urn:a:b') == InList(p("a"), (1, "x", True, "urn:a:b"), True)
    assert parse("a==2020-01-01,2020-01-02").values == (  # type: ignore[union-attr]
        Temporal("Date", "2020-01-01"),
        Temporal("Date", "2020-01-02"),
    )


def test_ranges() -> None:
    assert parse("temperature==10..20") == Range(p("temperature"), 10, 20)
    assert parse("temperature!=10..20") == Range(p("temperature"), 10, 20, True)
    assert parse("a==-5.5..-1") == Range(p("a"), -5.5, -1)
    assert parse('a=="a".."m"') == Range(p("a"), "a", "m")
    r = parse("a.observedAt==2020-01-01T00:00:00Z..2020-02-01T00:00:00Z")
    assert r == Range(
        p("a", meta="observedAt"),
        Temporal("DateTime", "2020-01-01T00:00:00.000000Z"),
        Temporal("DateTime", "2020-02-01T00:00:00.000000Z"),
    )
    assert parse("a==2020-01-01..2020-12-31") == Range(
        p("a"), Temporal("Date", "2020-01-01"), Temporal("Date", "2020-12-31")
    )


def test_patterns() -> None:
    assert parse('brandName~="^Merc"') == Pattern(p("brandName"), "^Merc")
    assert parse('brandName!~="^Merc"') == Pattern(p("brandName"), "^Merc", True)
    # Unquoted: ends at a top-level ';', '|' or ')'; the pattern's own parentheses balance.
    assert parse("a~=(?i)^merc.*;b") == And((Pattern(p("a"), "(?i)^merc.*"), Exists(p("b"))))
    assert parse("a~=^(x|y)$|b") == Or((Pattern(p("a"), "^(x|y)$"), Exists(p("b"))))
    assert parse("(a~=x{1,3})") == Pattern(p("a"), "x{1,3}")
    assert parse(r"a~=\)") == Pattern(p("a"), r"\)")


# -- paths ----------------------------------------------------------------------------------------


def test_paths() -> None:
    assert parse("a.b.c==1").path == p("a", "b", "c")  # type: ignore[union-attr]
    assert parse("address[city]==1").path == p("address", keys=("city",))  # type: ignore[union-attr]
    q = "sensor.rawdata[airquality.particulate]==40"
    assert parse(q).path == p("sensor", "rawdata", keys=("airquality", "particulate"))  # type: ignore[union-attr]
    # [a][b] is the same as [a.b]
    assert parse("a[k1][k2]==1") == parse("a[k1.k2]==1")
    assert parse("a.sub[k]").path == p("a", "sub", keys=("k",))  # type: ignore[union-attr]
    assert parse("color[*]==1").path.keys == ("*",)  # type: ignore[union-attr]
    assert parse("color[en-GB]==1").path.keys == ("en-GB",)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "meta", ["observedAt", "createdAt", "modifiedAt", "unitCode", "datasetId", "objectType"]
)
def test_instance_members_are_not_expanded(meta: str) -> None:
    path = parse(f"a.{meta}").path  # type: ignore[union-attr]
    assert path == Path(D + "a", (), meta, ())
    path = parse(f"a.b.{meta}").path  # type: ignore[union-attr]
    assert path == Path(D + "a", (D + "b",), meta, ())


def test_bracket_keys_are_not_expanded_and_names_are() -> None:
    path = parse("ex:speed.sub[value.x]==1").path  # type: ignore[union-attr]
    assert path.attr == "ex:speed"
    assert path.subs == (D + "sub",)
    assert path.keys == ("value", "x")
    assert path.names == ("ex:speed", "sub")


def test_unicode_names() -> None:
    assert parse("temperatura_média>1").path.attr == D + "temperatura_média"  # type: ignore[union-attr]


# -- logic ----------------------------------------------------------------------------------------


def test_and_binds_tighter_than_or() -> None:
    a, b, c = (Exists(p(n)) for n in "abc")
    assert parse("a;b|c") == Or((And((a, b)), c))
    assert parse("a|b;c") == Or((a, And((b, c))))
    assert parse("(a|b);c") == And((Or((a, b)), c))
    assert parse("a;(b|c)") == And((a, Or((b, c))))


def test_spec_examples_6_and_7() -> None:
    q6 = parse('((speed>50|rpm>3000);brandName=="Mercedes")')
    assert q6 == And(
        (
            Or((Compare(p("speed"), ">", 50), Compare(p("rpm"), ">", 3000))),
            Compare(p("brandName"), "==", "Mercedes"),
        )
    )
    q7 = parse("(temperature>=20;temperature<=25)|capacity<=10")
    assert q7 == Or(
        (
            And((Compare(p("temperature"), ">=", 20), Compare(p("temperature"), "<=", 25))),
            Compare(p("capacity"), "<=", 10),
        )
    )


def test_chains_are_flattened() -> None:
    a, b, c, d = (Exists(p(n)) for n in "abcd")
    assert parse("a;b;c;d") == And((a, b, c, d))
    assert parse("a|(b|c)|d") == Or((a, b, c, d))
    assert parse("((a))") == a


def test_expand_values() -> None:
    vocab = {"Male": "http://example.org/Male"}

    def expand_value(term: str) -> str:
        return vocab.get(term, expand(term))

    node = parse_q("gender==Male", expand, expand_values=["gender"], expand_value=expand_value)
    assert node == Compare(p("gender"), "==", "http://example.org/Male")
    node = parse_q('gender=="Male",Female', expand, expand_values=["gender"])
    assert node == InList(p("gender"), (D + "Male", D + "Female"))
    # Other attributes keep their values, and still need quotes.
    assert parse_q('other=="Male"', expand, expand_values=["gender"]).value == "Male"  # type: ignore[union-attr]
    with pytest.raises(BadRequestData):
        parse_q("other==Male", expand, expand_values=["gender"])


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment", "position"),
    [
        ("", "empty", None),
        ("a==", "needs a value", 3),
        ("a=1", "'=' is not an operator", 1),
        ("a=>1", "'=' is not an operator", 1),
        ("a===1", "expected a value", 3),
        ("a==1;", "expected an attribute name, found the end", 5),
        (";a", "expected an attribute name, found ';'", 0),
        ("a;;b", "found ';'", 2),
        ("a||b", "found '|'", 2),
        ("(a", "'(' is never closed", 0),
        ("a)", "')' without a matching '('", 1),
        ("()", "found ')'", 1),
        ("(a;b", "never closed", 0),
        ("a b", "whitespace", 1),
        (" a", "whitespace", 0),
        ("a== 1", "whitespace", 3),
        ("a==1 ", "whitespace", 3),
        ("a==Mercedes", "quote strings", 3),
        ('a=="open', "unterminated string", 3),
        ('a=="\\x"', "invalid string", 3),
        ('a=="\\ud800"', "lone surrogate", 3),
        ("a==1..", "upper bound", 6),
        ("a>1..5", "a range only goes with", 1),
        ("a==1..x:y", "range bounds", 6),
        ('a==1.."z"', "same type", 3),
        ("a==true..false", "quote strings", 3),
        ("a==1..3,4", "range cannot be part of a value list", 7),
        ("a==1,2..3", "range cannot be part of a value list", 6),
        ("a==1,", "cannot end with ','", 5),
        ("a>1,2", "a value list only goes with", 1),
        ("a>true", "does not compare booleans", 2),
        ("a<urn:x:y", "needs a number, a quoted string or a temporal", 2),
        ("a==007", "not a number", 3),
        ("a==1.", "not a number", 3),
        ("a==2020-13-01", "not a valid Date", 3),
        ("a==2020-01-01T25:00:00Z", "not a valid DateTime", 3),
        ("a==25:00:00", "not a valid Time", 3),
        ("a~=", "needs a value", 3),
        ("a~=;", "needs a pattern", 3),
        ('a~="("', "invalid regular expression", 3),
        ("a~=[", "invalid regular expression", 3),
        ("a.", "expected an attribute name, found the end", 2),
        ("a[", "expected a member name", 2),
        ("a[]", "expected a member name in the bracket path, found ']'", 2),
        ("a[b", "'[' is never closed", 3),
        ("a[b].c", "bracket path must come last", 4),
        ("a[b c]", "expected '.' or ']'", 3),
        ("a.observedAt.b", "has no sub-attributes", 12),
        ("1a==1", "expected an attribute name, found '1'", 0),
        ("sensor{humidity}==40", "linked-entity", 6),
        ("!a==1", "takes no operator", 2),
        ("a==1(", "found '('", 4),
        ("a==x(y)", "quote strings", 3),
    ],
)
def test_errors_name_the_position(text: str, fragment: str, position: int | None) -> None:
    fails(text, fragment, position)


def test_error_detail_quotes_the_neighbourhood() -> None:
    err = fails("temperature>>5", "found '>'")
    assert "temperature>>5" in err.detail


def test_limits() -> None:
    fails("a" * (MAX_LENGTH + 1), "longer than")
    deep = "(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1)
    fails(deep, "nested parentheses")
    ok = "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    assert parse(ok) == Exists(p("a"))
    fails(";".join(["a"] * (MAX_TERMS + 1)), "query terms")
    assert len(parse(";".join(["a"] * MAX_TERMS)).items) == MAX_TERMS  # type: ignore[union-attr]
    fails("a~=" + "x" * 1001, "pattern longer than")
    fails("a==" + "1" * 5000, "number too long")


def test_unusable_iris_are_refused() -> None:
    def bad(term: str) -> str:
        return 'urn:x:"' + term

    with pytest.raises(BadRequestData, match="usable IRI"):
        parse_q("a", bad)


def test_non_string_q() -> None:
    with pytest.raises(BadRequestData):
        parse_q(None, expand)  # type: ignore[arg-type]


# -- rendering ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "!a.b[c.d]",
        "a==1;b!=-2.5|c>=2020-01-01T00:00:00.000000Z",
        '(a|b);c=="x"',
        'a==1,"y",true;b!=1..5',
        'a~="^(x|y)$";b.observedAt<12:00:00.000000Z',
        'a=="q\\"uote"',
        'a.datasetId=="urn:d:1"',
    ],
)
def test_render_reads_back(text: str) -> None:
    node = parse(text)
    assert parse(render_q(node)) == node
