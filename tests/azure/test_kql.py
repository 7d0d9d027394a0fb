"""services.azure.kql: user text stays inside string literals, names come from the
whitelist, times and limits are validated, and every view queries its table within
its window. No Azure access: the queries are parsed here with a small KQL
string-literal lexer written from the documented rules, independent of the module."""
from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone

import pytest

from services.azure import kql
from services.azure.kql import (AppInsightsMapping, AppInsightsQueries, Query, TrafficLogQueries, ident,
                                kql_datetime, kql_limit, kql_string, kql_timespan, table_ident)
from services.entities import TimeWindow
from services.errors import BackendUnavailable, InvalidInput
from services.telemetry import between, window

# --- a KQL string-literal lexer, from the docs -------------------------------------------
# https://learn.microsoft.com/azure/kusto/query/scalar-data-types/string and Kusto.Language's
# TokenParser.ScanStringEscape: \\ \" \' \a \b \f \n \r \t \v, \uXXXX, \UXXXXXXXX, \xHH;
# a raw CR, LF, U+2028 or U+2029 ends the literal (an error here).

_SIMPLE = {"\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
           "t": "\t", "v": "\v"}
_HEX = {"u": 4, "U": 8, "x": 2}
_LINE_BREAKS = "\r\n\u2028\u2029"


class LexError(ValueError):
    pass


def decode_literal(src: str, i: int = 0) -> tuple[str, int]:
    """Decode the double-quoted literal starting at ``src[i]``; return (value, index after it)."""
    if src[i] != '"':
        raise LexError(f"no literal at {i}")
    i += 1
    out = []
    while True:
        if i >= len(src):
            raise LexError("unterminated literal")
        ch = src[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch in _LINE_BREAKS:
            raise LexError(f"raw line break {ch!r} inside a literal")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(src):
            raise LexError("backslash at the end")
        code = src[i + 1]
        if code in _SIMPLE:
            out.append(_SIMPLE[code])
            i += 2
        elif code in _HEX:
            digits = src[i + 2:i + 2 + _HEX[code]]
            if len(digits) != _HEX[code] or not re.fullmatch(r"[0-9A-Fa-f]+", digits):
                raise LexError(f"bad \\{code} escape")
            out.append(chr(int(digits, 16)))
            i += 2 + _HEX[code]
        else:
            raise LexError(f"unknown escape \\{code}")


def split_literals(query: str) -> tuple[str, list[str]]:
    """The query with every string literal replaced by ``""`` (its skeleton) and the
    literals' values. Refuses single-quoted literals, verbatim/hidden prefixes and
    ``//`` comments outside literals: the module emits none of them."""
    skeleton, values, i = [], [], 0
    while i < len(query):
        ch = query[i]
        if ch == '"':
            if i > 0 and (query[i - 1] in "@hH"):
                raise LexError(f"prefixed literal at {i}")
            value, i = decode_literal(query, i)
            values.append(value)
            skeleton.append('""')
        elif ch in "'`":
            raise LexError(f"unexpected quote {ch!r} at {i}")
        elif query.startswith("//", i):
            raise LexError(f"comment at {i}")
        else:
            skeleton.append(ch)
            i += 1
    return "".join(skeleton), values


def decode(literal: str) -> str:
    value, end = decode_literal(literal)
    assert end == len(literal), "the literal ends before the text does"
    return value


def test_the_lexer_itself_decodes_and_refuses():
    assert decode(r'"a\"b\\c\n\u00e9\x41\U0001F600"') == 'a"b\\c\né' + "A\U0001F600"
    with pytest.raises(LexError):
        decode_literal('"open')
    with pytest.raises(LexError):
        decode_literal('"a\nb"')
    with pytest.raises(LexError):
        decode_literal(r'"\q"')
    assert split_literals('T | where x == "a\\"b" and y == "c"') == ('T | where x == "" and y == ""', ['a"b', "c"])


# --- kql_string ------------------------------------------------------------------------

HOSTILE = [
    "", "plain", 'say "hi"', '"', '""', "\\", "ends with backslash\\", "\\\"", "\\\\\"", 'x\\" | take 1',
    '" | take 1', '"; drop', "\" or 1==1 //", "// comment", "/* block */", "line\nbreak", "cr\rlf\r\n",
    "tab\tbed", "nul\x00byte", "bell\x07 esc\x1b del\x7f c1\x85\x9f", "ls\u2028ps\u2029", "é ü ñ 中文 🙂",
    "'single' quotes", "@\"verbatim\"", "h\"hidden\"", "```multi```", "\\u0022", "\\n literally",
    "{x}", "$(x)", "\ufeffbom", "\u202eright-to-left",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_kql_string_round_trips_hostile_text(text):
    literal = kql_string(text)
    assert decode(literal) == text
    # nothing in the literal can break a line or hide a control character
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" for ch in literal)


def test_kql_string_round_trips_random_text():
    rng = random.Random(20261121)
    pool = list('"\\\'\n\r\t\x00\x1f\x7f\x85\u2028\u2029|;/*@h` ') + ["u", "x", "0", "a", "é", "🙂"]
    for _ in range(2000):
        n = rng.randint(0, 40)
        text = "".join(rng.choice(pool) if rng.random() < 0.7 else chr(rng.choice(
            [rng.randint(0x20, 0x7E), rng.randint(0xA0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
            for _ in range(n))
        assert decode(kql_string(text)) == text


def test_kql_string_escapes_what_the_docs_name():
    assert kql_string('a"b') == r'"a\"b"'
    assert kql_string("a\\b") == r'"a\\b"'
    assert kql_string("a\nb\rc\td") == r'"a\nb\rc\td"'
    assert kql_string("\x00") == r'"\u0000"'
    assert kql_string("é🙂") == '"é🙂"'


def test_kql_string_refuses_non_text_overlong_and_lone_surrogates():
    for bad in (None, 42, b"bytes", ["x"], 1.5):
        with pytest.raises(InvalidInput):
            kql_string(bad)
    assert decode(kql_string("x" * kql.MAX_TEXT_CHARS)) == "x" * kql.MAX_TEXT_CHARS
    with pytest.raises(InvalidInput, match="too long"):
        kql_string("x" * (kql.MAX_TEXT_CHARS + 1))
    with pytest.raises(InvalidInput, match="Unicode"):
        kql_string("half \ud800 pair")


def test_kql_string_uses_the_plain_value_of_a_str_subclass():
    class Sneaky(str):
        def __iter__(self):
            return iter('" | take 1 //')
    assert decode(kql_string(Sneaky("safe"))) == "safe"


# --- datetimes, timespans, limits ---------------------------------------------------------

def test_kql_datetime_is_utc_with_microseconds():
    dt = datetime(2026, 11, 21, 11, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    assert kql_datetime(dt) == "datetime(2026-11-21T10:00:00.000005Z)"
    assert kql_datetime(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "datetime(2026-01-02T03:04:05.000000Z)"


def test_kql_datetime_refuses_naive_and_non_datetimes():
    with pytest.raises(InvalidInput, match="time zone"):
        kql_datetime(datetime(2026, 11, 21, 10, 0))
    for bad in ("2026-11-21T10:00:00Z", 1_763_719_200, None, datetime(2026, 11, 21).date()):
        with pytest.raises(InvalidInput):
            kql_datetime(bad)


@pytest.mark.parametrize("seconds, text", [(1, "1s"), (30, "30s"), (90, "90s"), (60, "1m"), (300, "5m"),
                                           (5400, "90m"), (3600, "1h"), (7200, "2h"), (86400, "1d"),
                                           (90000, "25h"), (172800, "2d")])
def test_kql_timespan_uses_the_largest_exact_unit(seconds, text):
    assert kql_timespan(seconds) == text


@pytest.mark.parametrize("bad", [0, -5, 1.5, "5m", True, None, 10 ** 12])
def test_kql_timespan_refuses_non_positive_non_integers_and_huge(bad):
    with pytest.raises(InvalidInput):
        kql_timespan(bad)


def test_limits_are_bounded():
    assert kql_limit(1) == "1" and kql_limit(10_000) == "10000"
    for bad in (0, -1, 10_001, 2.0, "10", True, None):
        with pytest.raises(InvalidInput):
            kql_limit(bad)
    w = window("1h")
    for views in (TrafficLogQueries(), AppInsightsQueries()):
        with pytest.raises(InvalidInput):
            views.top_errors(w, limit=0)
        with pytest.raises(InvalidInput):
            views.slowest(w, limit=10_001)
        with pytest.raises(InvalidInput):
            views.log_search("prod", tail=0)
        assert "| top 10000 by latency_ms desc" in views.slowest(w, limit=10_000).text


def test_naive_window_times_are_refused_by_every_builder():
    naive = TimeWindow(start=datetime(2026, 11, 21, 9), end=datetime(2026, 11, 21, 10), bin_seconds=30)
    for views in (TrafficLogQueries(), AppInsightsQueries()):
        for build in (views.stats, views.series, views.status_mix, views.top_errors, views.slowest):
            with pytest.raises(InvalidInput):
                build(naive)
        with pytest.raises(InvalidInput):
            views.log_search("prod", start=datetime(2026, 11, 21, 9))
        with pytest.raises(InvalidInput):
            views.lookup("abc", window=naive)


def test_an_empty_or_reversed_window_is_refused():
    t = datetime(2026, 11, 21, 10, tzinfo=timezone.utc)
    with pytest.raises(InvalidInput):
        TrafficLogQueries().stats(TimeWindow(start=t, end=t, bin_seconds=10))
    with pytest.raises(InvalidInput):
        AppInsightsQueries().log_search("prod", start=t, end=t - timedelta(hours=1))


# --- the whitelist ------------------------------------------------------------------------

def test_whitelisted_names_are_emitted_plain():
    assert ident("AppRequests", "DurationMs") == "DurationMs"
    assert ident("AmlOnlineEndpointConsoleLog", "_ResourceId") == "_ResourceId"
    assert table_ident("AmlOnlineEndpointTrafficLog") == "AmlOnlineEndpointTrafficLog"


@pytest.mark.parametrize("table, column", [
    ("AppRequests", "Nope"), ("AppRequests", "durationms"), ("AppRequests", "DurationMs | take 1"),
    ("AppRequests", "ClientIP"), ("AmlOnlineEndpointConsoleLog", "EndpointName"),
    ("SecurityEvent", "TimeGenerated"), ("apprequests", "TimeGenerated"), ("AppRequests; drop", "Name"),
    (None, "Name"), ("AppRequests", None), (["AppRequests"], "Name"),
])
def test_names_outside_the_whitelist_are_refused(table, column):
    with pytest.raises(InvalidInput):
        ident(table, column)


def test_the_whitelist_is_frozen_and_documented():
    with pytest.raises(TypeError):
        kql.SCHEMA["Evil"] = frozenset({"x"})
    assert set(kql.SCHEMA) == set(kql.DOCS)
    assert all(url.startswith("https://learn.microsoft.com/") for url in kql.DOCS.values())
    for table, columns in kql.SCHEMA.items():
        assert isinstance(columns, frozenset) and "TimeGenerated" in columns


def test_a_non_plain_name_would_be_bracket_quoted():
    assert kql._name("count") == '["count"]'
    assert kql._name("my col") == '["my col"]'
    assert decode(kql._name('x"]; drop')[1:-1]) == 'x"]; drop'


def test_a_mapping_naming_columns_outside_the_whitelist_is_refused():
    with pytest.raises(InvalidInput):
        AppInsightsMapping(endpoint_column="ClientIP")
    with pytest.raises(InvalidInput):
        AppInsightsMapping(model_property='model"] | take 1 //')
    assert AppInsightsQueries(AppInsightsMapping(endpoint_column="AppRoleInstance"))


# --- every builder: its table, its window, its literals ---------------------------------

W = between(datetime(2026, 11, 21, 9, tzinfo=timezone.utc), datetime(2026, 11, 21, 10, tzinfo=timezone.utc))
WINDOW_CLAUSE = ("where TimeGenerated >= datetime(2026-11-21T09:00:00.000000Z) "
                 "and TimeGenerated < datetime(2026-11-21T10:00:00.000000Z)")
T0, T1 = W.start, W.end


def builders(views, user: str):
    """Every builder of a flavour, with ``user`` as every piece of user text it takes."""
    return {
        "stats": lambda: views.stats(W, user),
        "series": lambda: views.series(W, user),
        "status_mix": lambda: views.status_mix(W, user),
        "top_errors": lambda: views.top_errors(W, user, limit=5),
        "slowest": lambda: views.slowest(W, user, limit=5),
        "lookup": lambda: views.lookup(user, W),
        "lookup_logs": lambda: views.lookup_logs(user, W, tail=50),
        "log_search": lambda: views.log_search(user, source=user, text=user, start=T0, end=T1, tail=50),
        "log_search_all": lambda: views.log_search(user, text=user, start=T0, end=T1),
        "log_search_gateway": lambda: views.log_search(user, source="gateway", text=user, start=T0, end=T1),
    }


EXPECTED_TABLES = {
    "traffic": {"stats": "AmlOnlineEndpointTrafficLog", "series": "AmlOnlineEndpointTrafficLog",
                "status_mix": "AmlOnlineEndpointTrafficLog", "top_errors": "AmlOnlineEndpointTrafficLog",
                "slowest": "AmlOnlineEndpointTrafficLog", "lookup": "AmlOnlineEndpointTrafficLog",
                "lookup_logs": "AmlOnlineEndpointConsoleLog", "log_search": "AmlOnlineEndpointConsoleLog",
                "log_search_all": "AmlOnlineEndpointConsoleLog", "log_search_gateway": "AmlOnlineEndpointTrafficLog"},
    "appinsights": {"stats": "AppRequests", "series": "AppRequests", "status_mix": "AppRequests",
                    "top_errors": "AppRequests", "slowest": "AppRequests", "lookup": "AppRequests",
                    "lookup_logs": "AppTraces", "log_search": "AppTraces", "log_search_all": "AppTraces",
                    "log_search_gateway": "AppRequests"},
}
FLAVOURS = {"traffic": lambda: TrafficLogQueries({"blue": "diabetes-regressor:3", "green": "diabetes-regressor:4"}),
            "appinsights": lambda: AppInsightsQueries()}
HOSTILE_USER = '" | take 1 // \\"\n\r\t\x00 /* */ \u2028 ; drop "'


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("view", list(EXPECTED_TABLES["traffic"]))
def test_every_builder_reads_its_table_within_the_window(flavour, view):
    q = builders(FLAVOURS[flavour](), "prod")[view]()
    assert isinstance(q, Query)
    assert q.table == EXPECTED_TABLES[flavour][view]
    assert q.timespan == (T0, T1)
    assert all(dt.tzinfo is not None for dt in q.timespan)
    skeleton, values = split_literals(q.text)
    assert re.search(rf"(^|\W){q.table}\n", q.text), q.text
    # every table the query reads is filtered to the window
    tables = re.findall(r"\b(AppRequests|AppExceptions|AppTraces|AmlOnlineEndpointTrafficLog|"
                        r"AmlOnlineEndpointConsoleLog)\n", q.text)
    assert tables and q.table in tables
    assert q.text.count(WINDOW_CLAUSE) == len(tables), q.text
    assert "prod" in values
    assert q.columns and len(set(q.columns)) == len(q.columns)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("view", list(EXPECTED_TABLES["traffic"]))
def test_hostile_text_cannot_leave_its_literal(flavour, view):
    benign = builders(FLAVOURS[flavour](), "prod")[view]()
    hostile = builders(FLAVOURS[flavour](), HOSTILE_USER)[view]()
    benign_skeleton, benign_values = split_literals(benign.text)
    hostile_skeleton, hostile_values = split_literals(hostile.text)
    assert hostile_skeleton == benign_skeleton
    assert [v.replace("prod", HOSTILE_USER) for v in benign_values] == hostile_values
    assert HOSTILE_USER in hostile_values


def test_hostile_deployment_models_stay_literals():
    benign = TrafficLogQueries({"blue": "m:1"}).stats(W)
    hostile = TrafficLogQueries({'blue" | take 1 //': 'm:1"\n| project x'}).stats(W)
    assert split_literals(hostile.text)[0] == split_literals(benign.text)[0]
    assert 'm:1"\n| project x' in split_literals(hostile.text)[1]


def test_hostile_mapping_values_stay_literals():
    benign = AppInsightsQueries(AppInsightsMapping(scoring_path="/score", data_message="mdc"))
    hostile = AppInsightsQueries(AppInsightsMapping(scoring_path='/score" | take 1', data_message='x"\n//'))
    for build in ("stats", "collected_inputs"):
        b = getattr(benign, build)(W, "prod") if build == "stats" else benign.collected_inputs(W, "prod")
        h = getattr(hostile, build)(W, "prod") if build == "stats" else hostile.collected_inputs(W, "prod")
        assert split_literals(h.text)[0] == split_literals(b.text)[0]


def test_user_text_is_refused_when_it_is_not_text_or_too_long():
    views = TrafficLogQueries()
    for bad in ("", "   ", None, 7):
        with pytest.raises(InvalidInput):
            views.lookup(bad)
        with pytest.raises(InvalidInput):
            views.log_search(bad)
    with pytest.raises(InvalidInput):
        views.stats(W, "x" * 1001)
    with pytest.raises(InvalidInput):
        views.log_search("prod", text="x" * 1001)
    with pytest.raises(InvalidInput):
        TrafficLogQueries({"blue": 3})


# --- what the views compute -------------------------------------------------------------

@pytest.mark.parametrize("views", [TrafficLogQueries(), AppInsightsQueries()], ids=["traffic", "appinsights"])
def test_views_count_failures_as_5xx_or_0_and_client_errors_as_4xx(views):
    text = views.stats(W).text
    assert "failures = sumif(weight, status >= 500 or status == 0)" in text
    assert "client_errors = sumif(weight, status >= 400 and status < 500)" in text
    for p in (50, 95, 99):
        assert f"p{p}_ms = percentilew(latency_ms, weight, {p})" in text
    assert "by endpoint, deployment, model" in text
    assert "=~" not in text  # no endpoint given: no endpoint filter
    assert "=~" in views.stats(W, "prod").text


def test_series_bins_by_the_window_bin_and_reports_rates():
    w = window("6h")
    assert w.bin_seconds == 300
    text = TrafficLogQueries().series(w, "prod").text
    assert '["bin"] = bin(TimeGenerated, 5m)' in text
    assert "rpm = todouble(requests) * 60.0 / 300" in text
    q = AppInsightsQueries().series(window("15m"))
    assert "bin(TimeGenerated, 10s)" in q.text and "* 60.0 / 10," in q.text
    assert q.columns[0] == "bin" and "failure_rate" in q.columns


def test_the_traffic_log_maps_deployments_to_models():
    text = TrafficLogQueries({"blue": "diabetes-regressor:3"}).stats(W).text
    assert 'model = case(DeploymentName == "blue", "diabetes-regressor:3", "")' in text
    assert 'model = ""' in TrafficLogQueries().stats(W).text
    assert "latency_ms = todouble(TotalDurationMs)" in text and "request_id = XRequestId" in text


def test_app_insights_reads_the_mapped_properties():
    text = AppInsightsQueries().stats(W, "prod").text
    assert 'model = tostring(Properties["model"])' in text
    assert 'deployment = tostring(Properties["deployment"])' in text
    assert "endpoint = tostring(AppRoleName)" in text
    assert 'tolong(tostring(Properties["resultCode"]))' in text
    assert 'where Name endswith "/score"' in text
    custom = AppInsightsQueries(AppInsightsMapping(model_property="tollgate.model", scoring_path="")).stats(W).text
    assert 'model = tostring(Properties["tollgate.model"])' in custom and "Name endswith" not in custom


def test_log_search_is_a_case_insensitive_plain_substring_of_the_tail():
    q = TrafficLogQueries().log_search("prod", source="blue", text="Error.*", start=T0, end=T1, tail=30)
    assert '| where text contains "Error.*"' in q.text
    assert 'where DeploymentName == "blue"' in q.text
    assert '_ResourceId endswith "/onlineendpoints/prod"' in q.text
    assert q.text.endswith("| top 30 by at desc\n| order by at asc")
    assert "contains" in q.text and not re.search(r"matches regex|has_cs|contains_cs", q.text)
    both = TrafficLogQueries().log_search("prod", start=T0, end=T1)
    assert both.text.startswith("union\n") and "AmlOnlineEndpointTrafficLog" in both.text
    assert "where text contains" not in both.text
    assert AppInsightsQueries().log_search("prod", text="", start=T0, end=T1).columns == kql.LOG_COLUMNS


def test_log_search_defaults_to_the_last_30_days():
    q = TrafficLogQueries().log_search("prod")
    start, end = q.timespan
    assert end - start == timedelta(days=30)
    assert abs((datetime.now(timezone.utc) - end).total_seconds()) < 60


def test_collected_inputs_come_from_app_insights_model_data_logs_only():
    q = AppInsightsQueries().collected_inputs(W, "prod", model="diabetes-regressor:3", limit=500)
    assert q.table == "AppTraces" and '== "model_data_collection"' in q.text
    assert "| top 500 by ts desc" in q.text
    assert q.columns == kql.COLLECTED_COLUMNS
    with pytest.raises(BackendUnavailable):
        TrafficLogQueries().collected_inputs(W, "prod")


def test_query_is_frozen():
    q = TrafficLogQueries().stats(W)
    with pytest.raises(AttributeError):
        q.text = "AppRequests | take 1"
